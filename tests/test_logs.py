"""multifrost.logs: JsonFormatter output and context binding."""
import io
import json
import logging

import pytest

from multifrost.logs import CONTEXT_KEYS, JsonFormatter, bind


@pytest.fixture
def captured():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(fields={"app": "tests"}))
    logger = logging.getLogger("multifrost.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


def test_a_record_is_one_json_object_with_its_extra_fields(captured):
    logger, records = captured
    context = {"worker_id": "w-1", "service_id": "svc", "pid": 42, "request_id": "r-9",
               "function": "add", "duration_ms": 1.5}
    assert set(context) == set(CONTEXT_KEYS)
    logger.info("call %s done", "add", extra=context)
    (entry,) = records()
    assert entry["message"] == "call add done"
    assert entry["level"] == "INFO" and entry["logger"] == "multifrost.test_logs"
    assert entry["app"] == "tests"
    assert entry["time"].endswith("+00:00")
    for key, value in context.items():
        assert entry[key] == value
    assert "args" not in entry and "msg" not in entry  # standard record attributes are not repeated


def test_traceback_and_unserializable_values(captured):
    logger, records = captured
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("failed", extra={"payload": {1, 2}})
    (entry,) = records()
    assert "ValueError: broken" in entry["exc_info"]
    assert entry["payload"] == str({1, 2})


def test_bound_context_merges_with_per_call_extra(captured):
    logger, records = captured
    bound = bind(logger, worker_id="w-2", service_id=None)
    bound.warning("one")
    bound.warning("two", extra={"request_id": "r-1"})
    first, second = records()
    assert first["worker_id"] == "w-2" and "service_id" not in first and "request_id" not in first
    assert second["worker_id"] == "w-2" and second["request_id"] == "r-1"


def test_bind_by_logger_name():
    bound = bind("multifrost.parent", worker_id="x")
    assert bound.logger is logging.getLogger("multifrost.parent")
    assert bound.extra == {"worker_id": "x"}


def test_crash_record_carries_worker_context(worker_script, caplog):
    import logging
    from multifrost import ParentWorker, WorkerCrashedError
    caplog.set_level(logging.WARNING, logger="multifrost.parent")
    with ParentWorker.spawn(worker_script) as worker:
        pid = worker.pid
        try:
            worker.call.crash(5)
        except WorkerCrashedError:
            pass
    records = [r for r in caplog.records if getattr(r, "exit_code", None) == 5]
    assert records, caplog.text
    assert records[0].pid == pid and records[0].worker_id == "math_worker.py"


def test_each_call_leaves_one_debug_record_with_its_fields(worker_script, caplog):
    from multifrost import ParentWorker, RemoteCallError
    caplog.set_level(logging.DEBUG, logger="multifrost.parent")
    with ParentWorker.spawn(worker_script, heartbeat_interval=0) as worker:
        assert worker.call.add(1, 2) == 3
        with pytest.raises(RemoteCallError):
            worker.call.divide(1, 0)
    calls = [r for r in caplog.records if r.name == "multifrost.parent" and hasattr(r, "duration_ms")]
    assert [r.function for r in calls] == ["add", "divide"], caplog.text
    assert all(r.levelno == logging.DEBUG and r.request_id and r.duration_ms >= 0 for r in calls)
    assert calls[0].request_id != calls[1].request_id
    assert "ok" in calls[0].getMessage() and "error" in calls[1].getMessage()


def test_a_crash_is_not_a_remote_error():
    from multifrost import MultifrostError, RemoteCallError, WorkerCrashedError
    assert WorkerCrashedError.__bases__ == (MultifrostError,)
    assert not issubclass(WorkerCrashedError, RemoteCallError)


def test_module_loggers_are_named_after_their_modules():
    import importlib
    import pkgutil
    import multifrost
    names = [m.name for m in pkgutil.walk_packages(multifrost.__path__, "multifrost.") if m.name != "multifrost.__main__"]
    checked = 0
    for name in names:
        module = importlib.import_module(name)
        assert not isinstance(getattr(module, "logger", None), logging.Logger), f"{name}: call it 'log'"
        log = getattr(module, "log", None)
        if isinstance(log, logging.Logger):
            assert log.name == name, (name, log.name)
            checked += 1
    assert checked >= 15
