"""Issue 15, class 3: names bound into the notebook never clobber the user's objects silently."""

from __future__ import annotations

import pytest

from qlora_nb.errors import QloraError
from qlora_nb.magics.names import check_bind


class _FakeSession:
    pass


_FakeSession.__name__ = "Session"
_FakeSession.__module__ = "qlora_nb.engine.session"


class _ToolkitResult:
    pass


_ToolkitResult.__module__ = "qlora_nb.engine.training.train"

# (name, what is bound there now, replaces_session, force, error fragment or None when allowed)
CASES = [
    ("train_result", None, False, False, None),
    ("my_run", None, False, False, None),
    ("class", None, False, False, "keyword"),
    ("None", None, False, True, "keyword"),
    ("1abc", None, False, False, "not a valid Python name"),
    ("my-run", None, False, False, "not a valid Python name"),
    ("", None, False, False, "not a valid Python name"),
    ("a b", None, False, True, "not a valid Python name"),
    ("print", None, False, False, "builtin"),
    ("list", None, False, False, "builtin"),
    ("print", None, False, True, None),
    ("qlora", _FakeSession(), False, False, "live Session"),
    ("qlora", _FakeSession(), False, True, None),
    ("qlora", _FakeSession(), True, False, None),  # re-running %qlora_load
    ("mydf", "DataFrame", False, False, "already holds your"),
    ("mydf", "DataFrame", True, False, "already holds your"),
    ("mydf", "DataFrame", False, True, None),
    ("x", 5, False, False, "already holds your int"),
    ("f", len, False, False, "already holds your builtin_function_or_method"),
    ("n", None, False, False, None),
    ("train_result", _ToolkitResult(), False, False, None),  # the previous run's result: a normal re-run
]


def _ns_for(name, value):
    if value is None:
        return {}
    if value == "DataFrame":
        import pandas as pd

        value = pd.DataFrame({"a": [1]})
    return {name: value}


@pytest.mark.parametrize("name,existing,replaces_session,force,error", CASES,
                         ids=[f"{c[0] or 'empty'}-{type(c[1]).__name__}-{c[2]}-{c[3]}" for c in CASES])
def test_bind_rules(name, existing, replaces_session, force, error):
    ns = _ns_for(name, existing)
    if name == "n":
        ns = {"n": None}  # a user's None is a user's value too
        error = "already holds your NoneType"
    if error is None:
        check_bind(ns, name, flag="-o", what="TrainResult", force=force, replaces_session=replaces_session)
    else:
        with pytest.raises(QloraError, match=error) as info:
            check_bind(ns, name, flag="-o", what="TrainResult", force=force, replaces_session=replaces_session)
        assert str(info.value).startswith("-o: ")


# ----------------------------------------------------------------------------- through the magics
@pytest.fixture(scope="module")
def shell(tmp_path_factory, tiny_model_dir):
    import pandas as pd
    from IPython.testing import globalipapp

    import qlora_nb

    ip = globalipapp.start_ipython() or globalipapp.get_ipython()
    ip.run_line_magic("load_ext", "qlora_nb")
    s = qlora_nb.load(str(tiny_model_dir), r=4, alpha=8, dropout=0.0)
    ip.user_ns.update(qlora=s, mydf=pd.DataFrame({"a": [1]}), tiny=str(tiny_model_dir))
    yield ip, s
    ip.run_line_magic("unload_ext", "qlora_nb")
    for k in ("qlora", "mydf", "tiny", "alias", "also", "led", "print", "compare_result", "q3"):
        ip.user_ns.pop(k, None)


def _run(ip, cell):
    from test_bad_input import run_cell

    return run_cell(ip, cell)


REFUSED = [
    ("%%qlora_train -o qlora\ndata: demo\nmax_steps: 1", ["-o", "'qlora' holds a live Session", "--force"]),
    ("%%qlora_train -o mydf\ndata: demo\nmax_steps: 1", ["'mydf' already holds your DataFrame"]),
    ("%%qlora_train -o class\ndata: demo", ["keyword"]),
    ('%qlora_compare "hi" -o print', ["builtin"]),
    ('%qlora_compare "hi" -o qlora', ["live Session"]),
    ("%qlora_ledger -o mydf", ["already holds your DataFrame"]),
    ("%qlora_plan smollm2-135m --text -o mydf", ["already holds your DataFrame"]),
    ("%qlora_load {tiny} --quiet --name class", ["keyword"]),
    ("%qlora_load {tiny} --quiet --name mydf", ["already holds your DataFrame"]),
    ("%qlora_load {tiny} --quiet --name print", ["builtin"]),
]


@pytest.mark.parametrize("cell,expect", REFUSED, ids=[c.split("\n")[0] for c, _ in REFUSED])
def test_magics_refuse_to_clobber(shell, cell, expect):
    ip, s = shell
    before = dict(ip.user_ns)
    result, out = _run(ip, cell.format(tiny=ip.user_ns["tiny"]))
    assert isinstance(result.error_in_exec, QloraError), out
    for e in expect:
        assert e in out, (e, out)
    assert "Traceback" not in out
    assert ip.user_ns["qlora"] is s and ip.user_ns["mydf"] is before["mydf"]
    assert not s.runs  # refused before any training


def test_force_replaces_and_unload_names_the_other_variables(shell):
    ip, s = shell
    result, out = _run(ip, "%qlora_ledger -o mydf --force")
    assert result.success, out
    assert type(ip.user_ns["mydf"]).__name__ == "Ledger"
    result, out = _run(ip, f"%qlora_load {ip.user_ns['tiny']} --quiet --name q3")
    assert result.success, out
    ip.user_ns["alias"] = ip.user_ns["q3"]
    ip.user_ns["also"] = ip.user_ns["q3"]
    result, out = _run(ip, "%qlora_unload --session q3")
    assert result.success, out
    assert "also unbound alias, also" in out
    assert "q3" not in ip.user_ns and "alias" not in ip.user_ns and "also" not in ip.user_ns
    assert ip.user_ns["qlora"] is s
