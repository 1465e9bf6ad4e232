# Oasis's helper inside the guest interpreter, the module `_oasis`. It gives the host what a
# notebook shows: the last expression's value (kept instead of printed), the exception of a
# failed turn, and every matplotlib figure left open, rendered to PNG and closed. It reports
# through the runtime's door (`_host.call`) with one-letter frames:
#   R<json>  the final expression's repr        E<json>  the uncaught exception
#   F        a pyplot figure was opened          I<png>   a rendered figure (from finish())
# The host takes R, E and F only during the user's turn, and I (whole PNG files, bounded in
# count and bytes) only during its own figure step.
import sys

_orig_excepthook = sys.excepthook

# Reports are cut here to spare the door; the host cuts them again to the call's output caps
# (it trusts these no more than stdout).
_REPORT_CHARS = 2_000_000


def _cut(text):
    if len(text) <= _REPORT_CHARS:
        return text
    return text[:_REPORT_CHARS] + "\n[... %d characters cut]" % (len(text) - _REPORT_CHARS)


def _send(frame):
    try:
        import _host

        _host.call(frame)
    except Exception:
        pass  # the door is closed or full; never break the user's code over a report


def _displayhook(value):
    if value is None:
        return
    import builtins
    import json

    builtins._ = None
    try:
        text = repr(value)
    except BaseException as e:  # a broken __repr__ must not lose the turn
        text = "<repr failed: %s: %s>" % (type(e).__name__, e)
    builtins._ = value
    _send(b"R" + json.dumps(_cut(text)).encode())


def _excepthook(tp, value, tb):
    try:
        import json
        import traceback

        text = "".join(traceback.format_exception(tp, value, tb))
        try:
            message = str(value)
        except BaseException:
            message = "<str failed>"
        report = {"name": _cut(tp.__name__), "message": _cut(message), "traceback": _cut(text)}
        _send(b"E" + json.dumps(report).encode())
    except BaseException:
        pass
    _orig_excepthook(tp, value, tb)


def _show(*args, **kwargs):
    # Figures stay open; finish() renders and closes them, as a notebook does inline.
    return None


def _patch_pyplot():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None and plt.show is not _show:
        plt.show = _show
    return plt


def _hook_figures():
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if helpers is None:
        return False
    gcf = helpers.Gcf
    orig = gcf.__dict__.get("_set_new_active_manager")
    if orig is None or getattr(orig, "_oasis", False):
        return orig is not None
    func = orig.__func__

    def _set_new_active_manager(cls, manager):
        _send(b"F")
        return func(cls, manager)

    _set_new_active_manager._oasis = True
    gcf._set_new_active_manager = classmethod(_set_new_active_manager)
    return True


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
    if _hook_figures():
        # Said on stdout, not through the door: the door stays closed during the first turn,
        # where the runtime's own setup would otherwise probe it.
        sys.stdout.write("oasis:figures-hooked\n")


def finish():
    _uncount_turn()
    plt = _patch_pyplot()
    _hook_figures()
    if plt is None or not plt.get_fignums():
        return
    import io

    for num in plt.get_fignums():
        try:
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            _send(b"I" + buf.getvalue())
        except Exception as e:
            print("oasis: could not render figure %s: %s" % (num, e), file=sys.stderr)
    plt.close("all")
