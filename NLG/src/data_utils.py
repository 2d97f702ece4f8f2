"""Fine-tuning data: token-id jsonl ({"context": [...], "completion": [...]}) as gpt2_encode.py writes.

Microsoft's FT_Dataset semantics, except that examples are not padded to --seq_len: `collate_pad`
pads each batch to its longest example.
  input  = (context + completion)[:seq_len]
  target = input shifted left by one
  mask   = 1 where the target is a completion token (from the last context position on, so the
           first completion token and the final end-of-text are predicted), 0 elsewhere;
           joint LM (--obj jlm) sets it on every position.
"""
import json
import math

import torch


def read_ft_file(path, training=False, joint_lm=False):
    """[(context ids, completion ids, line number)] with errors that name the file and line.
    Training data (training=True) needs a completion on every line: an empty one has nothing
    to learn (its loss mask is all zero, a step of such lines trains on nothing), and a context,
    except for the joint LM (--obj jlm, plain text): the first completion token is predicted
    from the context's last position. Decoding reads the contexts alone."""
    samples = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(item, dict) or "context" not in item or "completion" not in item:
                raise ValueError(f"{path}:{lineno}: expected an object with 'context' and "
                                 f"'completion' token-id lists (run gpt2_encode.py first)")
            ctx, comp = item["context"], item["completion"]
            for name, ids in (("context", ctx), ("completion", comp)):
                if not isinstance(ids, list) or not all(
                        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
                    raise ValueError(f"{path}:{lineno}: '{name}' must be a list of non-negative "
                                     f"token ids (is this a *_formatted.jsonl text file? encode "
                                     f"it with gpt2_encode.py)")
            if not comp and not ctx:
                raise ValueError(f"{path}:{lineno}: empty context and completion")
            if training and not comp:
                raise ValueError(f"{path}:{lineno}: empty completion: nothing to train on "
                                 f"(drop the line, or encode with gpt2_encode.py --add_eos, "
                                 f"which ends every completion with <|endoftext|>)")
            if training and not ctx and not joint_lm:
                raise ValueError(f"{path}:{lineno}: empty context: the first completion token "
                                 f"has nothing to be predicted from (encode with gpt2_encode.py "
                                 f"--add_bos, or train a plain-text LM with --obj jlm)")
            samples.append((ctx, comp, lineno))
    if not samples:
        raise ValueError(f"{path}: no examples")
    return samples


class FT_Dataset(torch.utils.data.Dataset):
    """Microsoft's constructor arguments; items are unpadded (see collate_pad)."""

    def __init__(self, ft_file, batch_size, max_seq_length, max_eval_length=0, joint_lm=False,
                 prefix_len=0, infix_len=0, prefix_cursor=1000000, infix_cursor=2000000):
        self.ft_file = ft_file
        self.ft_samples = read_ft_file(ft_file, training=True, joint_lm=joint_lm)
        self.batch_size = batch_size
        self.num_examples = len(self.ft_samples)
        self.max_seq_length = max_seq_length
        self.max_eval_length = max_eval_length
        self.joint_lm = joint_lm
        self.num_batches = (self.num_examples + batch_size - 1) // batch_size
        self.prefix_len, self.infix_len = prefix_len, infix_len
        self.prefix_cursor, self.infix_cursor = prefix_cursor, infix_cursor

    def __len__(self):
        return self.num_examples

    def check_vocab(self, vocab_size):
        for ctx, comp, lineno in self.ft_samples:
            bad = [t for t in ctx + comp if t >= vocab_size]
            if bad:
                raise ValueError(f"{self.ft_file}:{lineno}: token id {bad[0]} is outside the "
                                 f"model's vocabulary (vocab_size {vocab_size}): wrong "
                                 f"--model_card or a file encoded with another vocabulary?")

    def length_report(self):
        """(truncated, unusable): examples longer than max_seq_length that keep part of their
        completion, and those that keep none of it (their loss mask is all zero)."""
        truncated = unusable = 0
        for ctx, comp, _ in self.ft_samples:
            cond = self.prefix_len + len(ctx) + self.infix_len
            if cond + len(comp) <= self.max_seq_length:
                continue
            if self.joint_lm or cond < self.max_seq_length:
                truncated += 1
            else:
                unusable += 1
        return truncated, unusable

    def loss_tokens(self, item):
        """The sum of example `item`'s loss mask (see __getitem__), from its lengths alone: a
        step's token count on the host, with no tensor built."""
        context, completion, _ = self.ft_samples[item]
        cond = self.prefix_len + len(context) + self.infix_len
        n = min(cond + len(completion), self.max_seq_length)
        return max(n - 1, 0) if self.joint_lm else max(n - 1 - max(cond - 1, 0), 0)

    def max_token_count(self):
        return max(min(len(c) + len(d) + self.prefix_len + self.infix_len, self.max_seq_length)
                   for c, d, _ in self.ft_samples)

    def __getitem__(self, item):
        context, completion, _ = self.ft_samples[item]
        pre = [self.prefix_cursor + i for i in range(self.prefix_len)]
        inf = [self.infix_cursor + i for i in range(self.infix_len)]
        conditions = pre + context + inf
        tokens = (conditions + completion)[: self.max_seq_length]
        n = len(tokens)
        target = tokens[1:] + [0]
        if self.joint_lm:
            mask = [1.0] * (n - 1) + [0.0]
        else:
            start = max(len(conditions) - 1, 0)
            mask = [0.0] * min(start, n) + [1.0] * max(n - 1 - start, 0)
            mask += [0.0] * (n - len(mask))
        qmax = self.max_seq_length - self.max_eval_length
        query = conditions[-qmax:] if len(conditions) > qmax else conditions
        return {
            "id": torch.tensor(item, dtype=torch.long),
            "input": torch.tensor(tokens, dtype=torch.long),
            "target": torch.tensor(target, dtype=torch.long),
            "mask": torch.tensor(mask, dtype=torch.float),
            "query": torch.tensor(query, dtype=torch.long),
            "query_len": torch.tensor(len(query), dtype=torch.long),
        }


def collate_pad(items):
    """Pad every sequence field to the longest in this batch (0 / mask 0, on the right) and add
    `n_tokens` (sum of the mask) and `loss_positions` (flat indices where the mask is nonzero),
    computed here on the host so that the training step needs no device sync."""
    out = {}
    for key in items[0]:
        vals = [it[key] for it in items]
        if vals[0].dim() == 0:
            out[key] = torch.stack(vals)
        else:
            out[key] = torch.nn.utils.rnn.pad_sequence(vals, batch_first=True, padding_value=0)
    out["n_tokens"] = float(out["mask"].sum())
    out["loss_positions"] = out["mask"].reshape(-1).nonzero().squeeze(1)
    return out


class BatchStream:
    """Training batches as a deterministic function of (seed, epoch, rank): batch g of the run is
    batch g % per_epoch of epoch 1 + g // per_epoch. Each epoch shuffles all examples with
    torch.Generator(seed + epoch) (DistributedSampler's permutation), fills the last global batch
    by wrapping around, and hands global batch i = perm[i*B*W : (i+1)*B*W] out rank by rank
    (rank r takes positions r, r + W, ...). So W ranks x batch B see exactly the examples that one
    process with batch W*B sees, and a resumed run restarts at any batch without replaying.
    pin_memory (for a CUDA device): the batch's tensors are in page-locked memory, so that
    their copy to the GPU (non_blocking) does not make the host wait for the device."""

    def __init__(self, dataset, batch_size, world_size=1, rank=0, seed=0, pin_memory=False):
        self.dataset, self.batch_size = dataset, batch_size
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.pin_memory = pin_memory
        n = len(dataset)
        self.per_epoch = math.ceil(n / (batch_size * world_size))
        self._epoch, self._perm = None, None

    def _permutation(self, epoch):
        if self._epoch != epoch:
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            perm = torch.randperm(len(self.dataset), generator=g)
            total = self.per_epoch * self.batch_size * self.world_size
            reps = math.ceil(total / len(perm))
            self._perm, self._epoch = perm.repeat(reps)[:total].tolist(), epoch
        return self._perm

    def epoch_of(self, g):
        return 1 + g // self.per_epoch

    def _global_batch(self, g):
        """The example indices of global batch g, every rank's."""
        epoch, i = 1 + g // self.per_epoch, g % self.per_epoch
        glob = self.batch_size * self.world_size
        return self._permutation(epoch)[i * glob:(i + 1) * glob]

    def batch(self, g):
        idx = self._global_batch(g)[self.rank::self.world_size]
        out = collate_pad([self.dataset[j] for j in idx])
        if self.pin_memory:
            out = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in out.items()}
        return out

    def global_tokens(self, g):
        """The loss-mask sum of global batch g over all ranks, computed on the host by every
        rank alike (each holds the whole dataset): no collective, no device copy."""
        return sum(self.dataset.loss_tokens(j) for j in self._global_batch(g))


def eval_batches(dataset, batch_size, world_size=1, rank=0):
    """Validation batches of this rank: examples rank, rank + W, ... in file order."""
    idx = list(range(rank, len(dataset), world_size))
    for i in range(0, len(idx), batch_size):
        yield collate_pad([dataset[j] for j in idx[i:i + batch_size]])
