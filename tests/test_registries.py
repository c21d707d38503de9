"""One typed registry per concept (docs/architecture.md, Registries): every spec is complete, every entry point
imports, every method the UI colours has a colour, and no module but the registry's own spells two or more of its
names in one literal list, tuple, set or dict's keys (where a new method would have to be added by hand)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from core.registries import (ALL, ARCHITECTURES, CLASSIFIER_SOURCES, COUNTERFACTUAL_METHODS, EXPLANATION_METHODS,
                             EXPORT_FORMATS, METRICS, RETRAINING_METHODS)
from core.registry import Registry, Spec, UnknownName, load
from services.platform.job_kinds import JOB_KINDS

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES: dict[str, Registry] = {**ALL, "job kinds": JOB_KINDS}
# where each registry is written (allowed to spell its names), and the colour table keyed by method names
OWN = {"core/registries.py", "services/platform/job_kinds.py", "services/presentation/palette.py"}
# Literals that name registered things for another reason than listing the concept, each with why.
ALLOWED: dict[tuple[str, str], str] = {
    ("services/explanations/feedback.py", "metrics"): "the Explanation row's columns read into a pick (pred …)",
    ("bench/exbl_effect.py", "retraining methods"): "the bench's hyper-parameter grid per method",
    ("bench/exbl_effect.py", "metrics"): "--pair-rule choices, named after the metric each rule maximises",
}
# Modules that should read a registry and do not yet (none left). Remove an entry once its module reads it.
PENDING: dict[tuple[str, str], str] = {}


def _entries(reg: Registry) -> list[tuple[str, str]]:
    out = []
    for spec in reg:
        for f in ("entry", "handler"):
            if isinstance(getattr(spec, f, None), str):
                out.append((spec.name, getattr(spec, f)))
    return out


@pytest.mark.parametrize("concept", list(REGISTRIES))
def test_every_spec_is_complete(concept):
    reg = REGISTRIES[concept]
    assert len(reg) > 0
    for spec in reg:
        assert isinstance(spec, Spec) and spec.name.strip() == spec.name and spec.name and spec.label.strip()
    assert len(set(reg.names())) == len(reg)
    assert len(set(reg.labels().values())) == len(reg), f"two {concept} share a label"


@pytest.mark.parametrize("concept", [c for c in REGISTRIES if _entries(REGISTRIES[c])])
def test_every_entry_point_imports(concept):
    for name, entry in _entries(REGISTRIES[concept]):
        assert callable(load(entry)), f"{concept} {name}: {entry} is not callable"


def test_get_refuses_an_unknown_name_in_one_line_naming_the_choices():
    with pytest.raises(UnknownName) as err:
        EXPLANATION_METHODS.get("gradcum")
    msg = str(err.value)
    assert "\n" not in msg and "'gradcum'" in msg and all(n in msg for n in EXPLANATION_METHODS.names())
    assert isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match="registered twice"):
        Registry("thing", [Spec("a", "A"), Spec("a", "B")])
    with pytest.raises(ValueError, match="needs a name and a label"):
        Registry("thing", [Spec("a", "")])


def test_registration_order_and_filters():
    assert METRICS.names(kind="faithfulness") == ["pos", "neg", "del", "ins"]
    assert METRICS.names(groups="evidence") == ["ar", "ap", "wr"]
    assert [s.name for s in METRICS] == METRICS.names()


def test_the_users_of_each_registry_agree_with_it():
    from core.counterfactual import needs_generator
    from core.explain import EXPLAINERS
    from core.model_io_names import FORMATS, SOURCE_NAMES
    from core.models import list_archs
    from core.models.export import WRITERS
    from core.models.imported import SOURCES
    from core.xbl import XBL_METHODS, XBLMethod, get_method
    from services.explanations.evaluation import ALIASES, DEFAULT_METHODS, known_methods
    from services.explanations.ltx import LTX_METHODS
    from services.jobs.kinds import HANDLERS

    assert set(EXPLAINERS) == {s.name for s in EXPLANATION_METHODS if s.variant_of is None}
    assert all(s.variant_of in EXPLAINERS for s in EXPLANATION_METHODS if s.variant_of)
    assert set(LTX_METHODS) == {s.name for s in EXPLANATION_METHODS if "ltx_explainer" in s.needs}
    assert known_methods() == EXPLANATION_METHODS.names() and set(DEFAULT_METHODS) <= set(known_methods())
    assert ALIASES["ig"] == "integrated_gradients"
    assert list(XBL_METHODS) == RETRAINING_METHODS.names()
    assert all(issubclass(load(s.entry), XBLMethod) for s in RETRAINING_METHODS)
    assert type(get_method("ce")).__name__ == "PlainCE"
    assert needs_generator == {s.name: s.generator for s in COUNTERFACTUAL_METHODS}
    assert set(list_archs()) == set(ARCHITECTURES.names())
    assert SOURCE_NAMES == tuple(SOURCES) == tuple(CLASSIFIER_SOURCES.names())
    assert FORMATS == tuple(EXPORT_FORMATS.names()) and set(WRITERS) == set(FORMATS)
    assert list(HANDLERS) == JOB_KINDS.names()


def test_every_method_the_ui_colours_has_its_own_colour():
    from services.presentation.palette import METHOD_COLOURS, METHOD_LABELS, method_colour

    coloured = [*EXPLANATION_METHODS.names(), *COUNTERFACTUAL_METHODS.names()]
    missing = [n for n in coloured if n not in METHOD_COLOURS]
    assert not missing, f"no colour in services/presentation/palette.py for {missing}"
    assert len({METHOD_COLOURS[n] for n in coloured}) == len(coloured), "two methods share a colour"
    assert set(METHOD_COLOURS) <= set(coloured), "a colour for a method no registry has"
    for n in coloured:  # a chart keyed by label gets the colour of the name
        assert method_colour(METHOD_LABELS[n]) == METHOD_COLOURS[n]


def test_the_cli_starts_without_torch_and_lists_the_registered_names():
    code = "import sys; import services.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ------------------------------------------------------------------------------------------- the literal scan


def _strings(nodes) -> list[str]:
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _constant(node) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_constant(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is None or _constant(k) for k in node.keys) and all(_constant(v) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        return _constant(node.operand)
    return False


def literal_lists(path: Path):
    """(line, strings) of every literal list / tuple / set, and the keys of every dict whose values are constants
    (a table of labels, colours or flags; a dict of computed values is a result, not a list of the concept)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            yield node.lineno, _strings(node.elts)
        elif isinstance(node, ast.Dict) and all(_constant(v) for v in node.values):
            yield node.lineno, _strings([k for k in node.keys if k is not None])


def spelled_lists(root: Path = ROOT) -> list[str]:
    names = {c: set(r.names()) for c, r in REGISTRIES.items()}
    found = []
    for folder in ("core", "services", "pages", "bench"):
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in OWN:
                continue
            for line, strings in literal_lists(path):
                for concept, known in names.items():
                    hit = [s for s in strings if s in known]
                    if len(hit) >= 2 and (rel, concept) not in ALLOWED and (rel, concept) not in PENDING:
                        found.append(f"{rel}:{line} spells {concept} {hit}")
    return found


def test_no_module_but_the_registrys_own_spells_its_names_in_a_literal_list():
    found = spelled_lists()
    assert not found, ("read the registry (core/registries.py, services/platform/job_kinds.py) instead of a list:\n"
                       + "\n".join(found))


def test_the_scan_catches_a_hand_written_list(tmp_path):
    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "bad.py").write_text('METHODS = ["gradcam", "saliency"]\nOK = {"ar": compute()}\n'
                                               'LABELS = {"exbl": "eXBL", "ce": "control"}\n')
    found = spelled_lists(tmp_path)
    assert len(found) == 2 and "explanation methods" in found[0] and "retraining methods" in found[1]
