"""MathWorker as a connect-mode service: ``math_service.py SERVICE_ID`` (registry from $MULTIFROST_REGISTRY)."""
import sys

from math_worker import MathWorker

MathWorker(service_id=sys.argv[1]).run()
