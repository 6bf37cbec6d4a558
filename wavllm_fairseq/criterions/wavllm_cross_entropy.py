"""Cross-entropy on target tokens only, normalised by the number of supervised tokens.

The prompt and speech positions never reach the loss: the decoder returns logits for
the target positions alone, and padding is ignored. The released code divides by a
count that includes prompt tokens; we divide by supervised tokens (SPEC section 4).
"""

import math
from collections import Counter
from dataclasses import dataclass, field

import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import FairseqDataclass

TASK_COUNT_PREFIX = "n_task_"


@dataclass
class WavLLMCrossEntropyConfig(FairseqDataclass):
    label_smoothing: float = field(default=0.0, metadata={"help": "epsilon for label smoothing, 0 disables"})


@register_criterion("wavllm_cross_entropy", dataclass=WavLLMCrossEntropyConfig)
class WavLLMCrossEntropy(FairseqCriterion):
    def __init__(self, task, label_smoothing: float = 0.0):
        super().__init__(task)
        self.eps = label_smoothing
        self.vocab_size = task.target_dictionary.vocab_size

    def forward(self, model, sample, reduce=True):
        logits, _ = model(**sample["net_input"])
        # The last column is the padding symbol, which never carries probability.
        lprobs = F.log_softmax(logits[..., : self.vocab_size].float(), dim=-1)
        target = sample["target"]
        mask = target.ne(self.padding_idx)
        safe_target = target.masked_fill(~mask, 0)
        nll = -lprobs.gather(-1, safe_target[..., None]).squeeze(-1)
        loss = nll
        if self.eps > 0:
            smooth = -lprobs.mean(dim=-1)
            loss = (1.0 - self.eps) * nll + self.eps * smooth
        nll_sum = nll[mask].sum()
        loss_sum = loss[mask].sum()
        correct = (lprobs.argmax(-1) == target) & mask
        ntokens = int(mask.sum())
        logging_output = {
            "loss": loss_sum.data,
            "nll_loss": nll_sum.data,
            "ntokens": ntokens,
            "nsentences": sample["nsentences"],
            "sample_size": ntokens,
            "n_correct": int(correct.sum()),
        }
        # A count for every task the loaded manifests hold, zeros included: fairseq sums the ranks'
        # logging outputs as one vector of their values, so every rank must give the same keys in
        # the same order whatever its batch holds.
        counts = Counter(sample.get("task_names", []))
        for name in sorted(set(self.task.task_names) | set(counts)):
            logging_output[TASK_COUNT_PREFIX + name] = counts[name]
        return loss_sum, ntokens, logging_output

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        ntokens = total("ntokens")
        sample_size = total("sample_size")
        metrics.log_scalar("loss", total("loss") / max(sample_size, 1) / math.log(2), sample_size, round=3)
        metrics.log_scalar("nll_loss", total("nll_loss") / max(ntokens, 1) / math.log(2), ntokens, round=3)
        metrics.log_derived("ppl", lambda meters: 2 ** meters["nll_loss"].avg)
        metrics.log_scalar("accuracy", 100.0 * total("n_correct") / max(ntokens, 1), ntokens, round=2)
        names = {k for log in logging_outputs for k in log if k.startswith(TASK_COUNT_PREFIX)}
        for key in sorted(names):
            if total(key) > 0:
                metrics.log_scalar_sum(key, total(key))

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
