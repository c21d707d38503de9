"""The registries of Exemplar's ML concepts, each written once (docs/architecture.md, Registries): explanation methods,
metrics, retraining methods, counterfactual methods, classifier architectures, classifier sources and export formats.

Torch-free and import-free (core.registry only): the CLI's help, the pages' pickers and labels, the benches and the
services read names and labels here; the code behind a name is its spec's "module:attribute" entry point, imported
when it runs (core.registry.load). A new method is its module plus one spec here. Colours live with the pages
(services/presentation/palette.py), keyed by these names. Job kinds: services/platform/job_kinds.py.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.registry import Registry, Spec

# ------------------------------------------------------------------------------------------ explanation methods


@dataclass(frozen=True)
class ExplanationMethod(Spec):
    entry: str                            # "module:function", fn(model, x, target, **kw) -> Attribution
    needs: tuple[str, ...] = ()           # "target_layer" (reads the network at its target layer),
    #                                       "ltx_explainer" (a trained LTX explainer of the classifier)
    variant_of: str | None = None         # runs that method with `kwargs` (an LTX variant), else itself
    kwargs: tuple[tuple[str, object], ...] = ()
    masking: str | None = None            # LTX: the masking its explainer was trained with
    aliases: tuple[str, ...] = ()         # other spellings the evaluation accepts (`ig`)
    evaluated_by_default: bool = False    # in `exemplar evaluate` when no method is named
    cost: float = 3.0                     # a prior of its cost per image, in classifier forward passes (a backward
    #                                       counts 2): the evaluate job's progress weights methods by it until one
    #                                       is measured (services/explanations/eval_progress.py)
    cost_per_step: float = 0.0            # LTX: the cost of one finetuning step per image (× finetune_steps)


_LTX = "core.explain.ltx:ltx"
EXPLANATION_METHODS: Registry[ExplanationMethod] = Registry("explanation method", [
    ExplanationMethod("gradcam", "GradCAM", "core.explain.gradcam:gradcam", needs=("target_layer",),
                      aliases=("grad_cam",), evaluated_by_default=True),
    ExplanationMethod("integrated_gradients", "Integrated Gradients",
                      "core.explain.integrated_gradients:integrated_gradients", aliases=("ig",),
                      evaluated_by_default=True, cost=96.0),  # 32 steps, each a forward and a backward pass
    ExplanationMethod("saliency", "Saliency", "core.explain.saliency:saliency"),
    ExplanationMethod("occlusion", "Occlusion", "core.explain.occlusion:occlusion", cost=225.0),  # 15 × 15 windows
    ExplanationMethod("guided_gradcam", "Guided GradCAM", "core.explain.guided_gradcam:guided_gradcam",
                      needs=("target_layer",), cost=6.0),
    # LTX (services.explanations.ltx): `ltx` is the paper's method (soft masking x ⊙ m, finetuned per image),
    # `ltx_pretrained` that explainer alone, `ltx_sampled` ours (binary masks sampled from m; it won the val sweep,
    # bench/methods.py). Each needs the classifier's newest explainer trained with its masking.
    ExplanationMethod("ltx_pretrained", "LTX (pretrained only)", _LTX, needs=("ltx_explainer",), variant_of="ltx",
                      kwargs=(("finetune_steps", 0),), masking="soft", evaluated_by_default=True, cost=2.0,
                      cost_per_step=6.0),
    ExplanationMethod("ltx", "LTX (finetuned)", _LTX, needs=("ltx_explainer",), masking="soft",
                      aliases=("ltx_finetuned",), evaluated_by_default=True, cost=2.0, cost_per_step=6.0),
    ExplanationMethod("ltx_sampled", "LTX (sampled masks, finetuned)", _LTX, needs=("ltx_explainer",),
                      variant_of="ltx", masking="sample", evaluated_by_default=True, cost=2.0, cost_per_step=6.0),
])

# ------------------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Metric(Spec):
    kind: str                             # "localisation" (map vs a mask) | "faithfulness" (perturbation)
    higher_is_better: bool
    help: str = ""
    needs: str = "mask"                   # "mask" (the lung mask), "confounder" (the marker mask), "model"
    groups: tuple[str, ...] = ()          # "evaluation" (method comparison), "evidence" (a retrain's held-out cells)


METRICS: Registry[Metric] = Registry("metric", [
    Metric("ar", "AR", "localisation", True, "share of the mask inside the map's region above τ",
           groups=("evaluation", "evidence")),
    Metric("ap", "AP", "localisation", True, "share of the map's region above τ inside the mask",
           groups=("evaluation", "evidence")),
    Metric("f1", "F1", "localisation", True, "2·AR·AP / (AR + AP)"),
    Metric("soft_ar", "soft AR", "localisation", True, "Σ(E·M) / ΣM: the map's mass on the mask over the mask"),
    Metric("relevance_mass", "relevance mass", "localisation", True,
           "Σ(E·M) / ΣE: share of the map's mass on the mask"),
    Metric("rra", "RRA", "localisation", True, "share of the mask inside the map's top-|M| pixels"),
    Metric("pointing", "pointing game", "localisation", True, "1 when the map's maximum lies in the mask"),
    Metric("wr", "wrong reason (WR)", "localisation", False, "share of the marker (confounder) inside the map's region",
           needs="confounder", groups=("evidence",)),
    Metric("pos", "POS", "faithfulness", False,
           "accuracy while the most relevant pixels are removed (lower is better)", needs="model",
           groups=("evaluation",)),
    Metric("neg", "NEG", "faithfulness", True,
           "accuracy while the least relevant pixels are removed (higher is better)", needs="model",
           groups=("evaluation",)),
    Metric("del", "DEL", "faithfulness", False,
           "target-class probability while the most relevant pixels are removed (lower is better)", needs="model",
           groups=("evaluation",)),
    Metric("ins", "INS", "faithfulness", True,
           "target-class probability while the least relevant pixels are removed (higher is better)", needs="model",
           groups=("evaluation",)),
])

# ------------------------------------------------------------------------------------------- retraining methods


@dataclass(frozen=True)
class RetrainingMethod(Spec):
    entry: str                            # "module:class", a core.xbl.method.XBLMethod subclass


RETRAINING_METHODS: Registry[RetrainingMethod] = Registry("XBL method", [
    RetrainingMethod("exbl", "eXBL triplet (true-class GradCAM)", "core.xbl.exbl:Exbl"),
    RetrainingMethod("exbl_cf", "eXBL triplet + counterexamples from the good region",
                     "core.xbl.exbl:ExblCounterexamples"),
    RetrainingMethod("penalty_mask", "RRR penalty on the bad exemplar's region", "core.xbl.penalty_mask:PenaltyMask"),
    RetrainingMethod("counterexamples", "CAIPI-style counterexamples from the good region",
                     "core.xbl.counterexamples:Counterexamples"),
    RetrainingMethod("bad_paste", "counterexamples pasting the bad exemplar's region at random places",
                     "core.xbl.paste:PasteCounterexamples"),
    RetrainingMethod("rrr", "RRR with every image's lung mask (upper bound)", "core.xbl.rrr:RRR"),
    RetrainingMethod("ce", "plain cross-entropy fine-tune (control)", "core.xbl.exbl:PlainCE"),
])

# --------------------------------------------------------------------------------------- counterfactual methods


@dataclass(frozen=True)
class CounterfactualMethod(Spec):
    entry: str                            # "module:function" (core.counterfactual's method signature)
    generator: str | None = None          # the generator kind it needs ("ddpm", "gan") or None
    affirmative: bool = False             # can guide its counterfactual back to the original class (--affirmative)
    preselected: bool = True              # ticked in the Counterfactuals page's Generate form


COUNTERFACTUAL_METHODS: Registry[CounterfactualMethod] = Registry("counterfactual method", [
    CounterfactualMethod("diffusion", "Diffusion guidance", "core.counterfactual.xaidiff:diffusion_method",
                         generator="ddpm", affirmative=True),
    CounterfactualMethod("adversarial", "Adversarial (pixel space)",
                         "core.counterfactual.adversarial:adversarial_method"),
    CounterfactualMethod("gan", "GAN (GCI)", "core.counterfactual.gci:gan_method", generator="gan", preselected=False),
])

# GAN attribute groups whose bare name misleads: the "class" attribute is what the generator was told to draw, not
# what the classifier predicts (a result "flipped" to Normal once read "class: COVID → Viral Pneumonia"). The words
# are stored with a result, so the UI, the CLI and exports say the same.
ATTRIBUTE_WORDS: dict[str, str] = {"class": "generator's class input"}


def attribute_words(name: str) -> str:
    """The words for an attribute group in results, the UI, the CLI and exports."""
    return ATTRIBUTE_WORDS.get(name, name)

# ------------------------------------------------------------------------------------------------- classifiers


@dataclass(frozen=True)
class Architecture(Spec):
    entry: str                            # "module:function", fn(num_classes, in_chans, **kw) -> classifier
    help: str = ""
    lr: float = 1e-3                      # the trainer's default peak learning rate
    demo_epochs: int = 6                  # the large demo's fit (services/demo/large.py): epochs, batch size and
    demo_batch_size: int = 32             # builder keywords (MobileNetV2 as the eXBL paper, standard stem)
    demo_kwargs: tuple[tuple[str, object], ...] = ()


ARCHITECTURES: Registry[Architecture] = Registry("architecture", [
    Architecture("simple_cnn", "Simple CNN", "core.models.simple_cnn:simple_cnn", help="fast on a CPU", lr=3e-3,
                 demo_epochs=4, demo_batch_size=64, demo_kwargs=(("width", 16),)),
    Architecture("mobilenet_v2", "MobileNetV2", "core.models.mobilenet:mobilenet_v2",
                 help="the eXBL paper's architecture"),
    Architecture("resnet18", "ResNet-18", "core.models.resnet:resnet18", help="a stronger baseline (best with a GPU)"),
])


@dataclass(frozen=True)
class ClassifierSource(Spec):
    entry: str                            # "module:function" building the network (core.models.imported)
    runs_code: bool = False               # builds by running Python code on the server: an admin's action


CLASSIFIER_SOURCES: Registry[ClassifierSource] = Registry("classifier source", [
    ClassifierSource("torchvision", "torchvision", "core.models.imported:build_torchvision"),
    ClassifierSource("timm", "timm", "core.models.imported:build_timm"),
    ClassifierSource("python", "Python factory (package.module:factory)", "core.models.imported:build_python",
                     runs_code=True),
])


@dataclass(frozen=True)
class ExportFormat(Spec):
    suffix: str = ""


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format", [
    ExportFormat("safetensors", "safetensors (weights)", ".safetensors"),
    ExportFormat("pt2", "torch.export program", ".pt2"),
    ExportFormat("onnx", "ONNX", ".onnx"),
])

ALL = {"explanation methods": EXPLANATION_METHODS, "metrics": METRICS, "retraining methods": RETRAINING_METHODS,
       "counterfactual methods": COUNTERFACTUAL_METHODS, "architectures": ARCHITECTURES,
       "classifier sources": CLASSIFIER_SOURCES, "export formats": EXPORT_FORMATS}
