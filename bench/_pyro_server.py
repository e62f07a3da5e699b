"""The Pyro5 peer of the library comparison: add and echo, msgpack serializer, TCP_NODELAY; prints its URI."""
import Pyro5
import Pyro5.api

Pyro5.config.SERIALIZER = "msgpack"
Pyro5.config.SOCK_NODELAY = True


@Pyro5.api.expose
class Worker:
    def add(self, a, b):
        return a + b

    def echo(self, value):
        return value


if __name__ == "__main__":
    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    print(daemon.register(Worker, "worker"), flush=True)
    daemon.requestLoop()
