"""The multifrost child the RPC benchmark spawns."""
from multifrost import ChildWorker


class AddWorker(ChildWorker):
    def add(self, a, b):
        return a + b

    async def aadd(self, a, b):
        return a + b

    def echo(self, value):
        return value


if __name__ == "__main__":
    AddWorker().run()
