# Oasis's helper inside the guest interpreter, installed as the module `_oasis` before the first
# user turn. It gives the host what a notebook shows: the last expression's value (kept instead
# of printed), the exception of a failed turn, and every matplotlib figure left open, rendered to
# PNG and closed. It reports through the runtime's door (`_host.call`), which the host opens only
# while `finish()` runs, so user code cannot forge a report.
import sys

_result = None
_error = None
_orig_excepthook = sys.excepthook


def _displayhook(value):
    global _result
    if value is None:
        return
    import builtins

    builtins._ = None
    try:
        _result = repr(value)
    except BaseException as e:  # a broken __repr__ must not lose the turn
        _result = "<repr failed: %s: %s>" % (type(e).__name__, e)
    builtins._ = value


def _excepthook(tp, value, tb):
    global _error
    try:
        import traceback

        text = "".join(traceback.format_exception(tp, value, tb))
    except BaseException:
        text = ""
    try:
        message = str(value)
    except BaseException:
        message = "<str failed>"
    _error = {"name": tp.__name__, "message": message, "traceback": text}
    _orig_excepthook(tp, value, tb)


def _show(*args, **kwargs):
    # Figures stay open; finish() renders and closes them, as a notebook does inline.
    return None


def _patch_pyplot():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None and plt.show is not _show:
        plt.show = _show
    return plt


def _uncount_turn():
    # Oasis's own turns should not shift the `<turn N>` names in the user's tracebacks.
    r = sys.modules.get("_reactor")
    if r is not None and isinstance(getattr(r, "_turns", None), int) and r._turns > 0:
        r._turns -= 1


def install():
    _uncount_turn()
    sys.displayhook = _displayhook
    sys.excepthook = _excepthook
    _patch_pyplot()


def finish():
    global _result, _error
    _uncount_turn()
    plt = _patch_pyplot()
    if _result is None and _error is None and (plt is None or not plt.get_fignums()):
        return  # nothing to report: the common fast path
    import json

    import _host

    if plt is not None:
        import io

        for num in plt.get_fignums():
            try:
                buf = io.BytesIO()
                plt.figure(num).savefig(buf, format="png")
                _host.call(b"I" + buf.getvalue())
            except Exception as e:
                print("oasis: could not render figure %s: %s" % (num, e), file=sys.stderr)
        plt.close("all")
    report = {"result": _result, "error": _error}
    _result = None
    _error = None
    _host.call(b"R" + json.dumps(report).encode())
