"""MathWorker as a connect-mode service: ``math_service.py SERVICE_ID`` (registry from $MULTIFROST_REGISTRY;
``$TEST_MAX_HELD_BYTES`` sets max_held_bytes)."""
import os
import sys

from math_worker import MathWorker

options = {"max_held_bytes": int(os.environ["TEST_MAX_HELD_BYTES"])} if "TEST_MAX_HELD_BYTES" in os.environ else {}
MathWorker(service_id=sys.argv[1], **options).run()
