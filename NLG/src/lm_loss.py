"""The NLG training loss, shared by every backbone (the hand-rolled GPT-2 and a Hugging Face
causal LM): logits only where the loss mask is 1, label smoothing as in Microsoft's GPT-2 code,
a sum or a mean over the masked tokens. One function, so that both backbones compute the same
loss from their hidden states by the same operations."""
import torch
import torch.nn.functional as F


def lm_loss(hidden, head, lm_labels, lm_mask=None, label_smooth=0.0, reduction="mean",
            loss_positions=None, is_report_accuracy=False):
    """(logits (N, V), loss[, first-token hit, all-tokens hit]) from hidden states (B, T, C).

    `head` maps hidden rows (N, C) to logits (N, V); it runs only on the N positions with
    lm_mask != 0 (all positions when lm_mask is None), in row-major order. loss =
    sum(token_loss * mask) / (sum(mask) + 1e-4); reduction="sum" returns the numerator instead
    (the trainer normalises over the whole distributed batch). Label smoothing: (1 - eps) NLL +
    eps * mean over the vocabulary of -log p. `loss_positions`: the flat indices of the nonzero
    mask entries, precomputed on the host so that a GPU step needs no sync.
    is_report_accuracy adds Microsoft's per-row report (first-token hit, all-tokens hit)."""
    B, T = lm_labels.shape
    flat_labels = lm_labels.reshape(-1)
    if loss_positions is None:
        loss_positions = (torch.arange(B * T, device=hidden.device) if lm_mask is None
                          else lm_mask.reshape(-1).nonzero().squeeze(1))
    pos = loss_positions.to(hidden.device)
    logits = head(hidden.reshape(B * T, -1).index_select(0, pos))
    labels = flat_labels.index_select(0, pos)
    smooth = label_smooth if label_smooth > 0.0001 else 0.0
    token_loss = F.cross_entropy(logits.float(), labels, reduction="none",
                                 label_smoothing=smooth)
    if lm_mask is None:
        weights = torch.ones_like(token_loss)
    else:
        weights = lm_mask.reshape(-1).index_select(0, pos).to(token_loss.dtype)
    loss_sum = (token_loss * weights).sum()
    if reduction == "sum":
        loss = loss_sum
    elif reduction == "mean":
        loss = loss_sum / (weights.sum() + 0.0001)
    else:
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    if not is_report_accuracy:
        return logits, loss
    t1_acc, all_acc = _row_accuracy(logits, labels, pos, weights, B, T)
    return logits, loss, t1_acc, all_acc


def _row_accuracy(logits, labels, pos, weights, B, T):
    """Microsoft's report: per row, is the first completion token right, and are all of them."""
    dev = logits.device
    counted = weights >= 1.0
    hit = (logits.argmax(-1) == labels) & counted
    row = torch.div(pos, T, rounding_mode="floor")
    misses = torch.zeros(B, device=dev).index_add_(0, row, (counted & ~hit).float())
    all_acc = (misses == 0).float()
    big = B * T
    first = torch.full((B,), big, device=dev, dtype=torch.long)
    first = first.scatter_reduce(0, row, torch.where(counted, pos, big), reduce="amin")
    hit_at = torch.zeros(big + 1, device=dev, dtype=torch.bool)
    hit_at[pos] = hit
    t1_acc = hit_at[first].float()
    return t1_acc, all_acc
