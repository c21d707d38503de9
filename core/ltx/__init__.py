"""LTX (Barkan et al., "Learning to Explain", arXiv 2310.16584): a learned explainer network for a frozen classifier.

- explainer.py: LTXExplainer, a small encoder–decoder over the image → sigmoid mask upsampled to the image size;
  load_explainer (safetensors + JSON config; services/explanations/ltx.py writes them).
- loss.py: ltx_loss = CE(f(x ⊙ m̃), argmax f(x)) + α · mean(m), per image; m̃ = m ("soft", the paper's) or a
  binary sample 1[m > u] with a straight-through gradient ("sample", the default: see loss.py for why).
- train.py: pretrain() over a training set, finetune() per instance for k steps, each image's mask taken at the
  step with the lowest training loss (finetune never sees labels, masks or any reported metric).
"""
from core.ltx.explainer import LTXExplainer, load_explainer  # noqa: F401
from core.ltx.loss import ALPHA, MASKING, apply_mask, ltx_loss, mask_noise  # noqa: F401
from core.ltx.train import FinetuneResult, finetune, pretrain  # noqa: F401
