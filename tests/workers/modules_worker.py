"""A worker that tells which modules are loaded in it (tests/test_startup.py): it imports
nothing beyond what a worker script needs, so what it reports is what its start loaded."""
import sys

from multifrost import ChildWorker


class ModulesWorker(ChildWorker):
    def loaded(self, names):
        return sorted(name for name in names if name in sys.modules)


if __name__ == "__main__":
    ModulesWorker().run()
