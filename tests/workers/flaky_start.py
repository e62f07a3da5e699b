"""A MathWorker that notes every start in $STARTS_FILE; while $BROKEN_FLAG exists it crashes at
start-up, and while $HOLD_FLAG exists it waits (at most a minute) before it serves."""
import os
import sys
import time

from math_worker import MathWorker

with open(os.environ["STARTS_FILE"], "a") as f:
    f.write(f"{os.getpid()}\n")
if os.path.exists(os.environ.get("BROKEN_FLAG", "")):
    sys.stderr.write("cannot start: the broken flag is set\n")
    sys.exit(4)
deadline = time.monotonic() + 60
while os.path.exists(os.environ.get("HOLD_FLAG", "")) and time.monotonic() < deadline:
    time.sleep(0.01)
MathWorker().run()
