"""data_utils.py: Microsoft's FT_Dataset semantics without padding to --seq_len, batch sharding."""
import json

import pytest
import torch

from nlg.data_utils import BatchStream, FT_Dataset, collate_pad, eval_batches


def microsoft_item(context, completion, seq_len, joint_lm=False):
    """Microsoft's FT_Dataset.__getitem__ (input / target / mask padded to seq_len), restated."""
    def pad(tokens, value):
        tokens = tokens[:seq_len]
        return tokens + [value] * (seq_len - len(tokens)), len(tokens)
    inp, n = pad(context + completion, 0)
    tgt, _ = pad((context + completion)[1:], 0)
    if joint_lm:
        msk = [1.0] * (n - 1)
    else:
        msk = [0.0] * (len(context) - 1) + [1.0] * (n - len(context))
    msk, _ = pad(msk, 0.0)
    return inp, tgt, msk


@pytest.mark.parametrize("seq_len,joint", [(40, False), (12, False), (40, True)])
def test_items_match_microsoft_layout_up_to_padding(tmp_path, seq_len, joint):
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(5):
        c = torch.randint(0, 100, (int(torch.randint(3, 10, (1,), generator=g)),), generator=g)
        d = torch.randint(0, 100, (int(torch.randint(2, 8, (1,), generator=g)),), generator=g)
        rows.append((c.tolist(), d.tolist()))
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"context": c, "completion": d}) + "\n" for c, d in rows))
    ds = FT_Dataset(str(path), 5, seq_len, joint_lm=joint)
    batch = collate_pad([ds[i] for i in range(5)])
    L = batch["input"].shape[1]
    assert L == max(min(len(c) + len(d), seq_len) for c, d in rows)  # padded per batch
    for i, (c, d) in enumerate(rows):
        inp, tgt, msk = microsoft_item(c, d, seq_len, joint)
        assert batch["input"][i].tolist() == inp[:L]
        assert batch["mask"][i].tolist() == msk[:L]
        assert all(v == 0 for v in msk[L:])  # nothing the loss needs was cut off
        # targets agree wherever the loss looks at them
        for p in range(L):
            if msk[p]:
                assert batch["target"][i, p].item() == tgt[p]
    assert batch["n_tokens"] == float(batch["mask"].sum())
    assert batch["loss_positions"].tolist() == batch["mask"].reshape(-1).nonzero().squeeze(1).tolist()


def test_bad_lines_are_named(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"context": [1], "completion": [2]}\n{"context": "text", "completion": [2]}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2: 'context' must be a list"):
        FT_Dataset(str(p), 2, 10)
    p.write_text('{"context": [1], "completion": [2]}\nnot json\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2: not valid JSON"):
        FT_Dataset(str(p), 2, 10)


class _Ids(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"id": torch.tensor(i), "input": torch.tensor([i, i]), "mask": torch.ones(2)}


@pytest.mark.parametrize("n", [16, 13, 3])
def test_ranks_share_the_single_process_global_batch(n):
    ds = _Ids(n)
    single = BatchStream(ds, 4, world_size=1, rank=0, seed=5)
    ranks = [BatchStream(ds, 2, world_size=2, rank=r, seed=5) for r in range(2)]
    assert single.per_epoch == ranks[0].per_epoch
    for g in range(3 * single.per_epoch):  # three epochs
        one = single.batch(g)["id"].tolist()
        two = [rs.batch(g)["id"].tolist() for rs in ranks]
        assert sorted(one) == sorted(two[0] + two[1])
        assert one[0::2] == two[0] and one[1::2] == two[1]
    # each epoch covers every example
    ep = [i for g in range(single.per_epoch) for i in single.batch(g)["id"].tolist()]
    assert set(ep) == set(range(n))
    # epochs are shuffled differently
    if n > 3:
        e1 = [single.batch(g)["id"].tolist() for g in range(single.per_epoch)]
        e2 = [single.batch(single.per_epoch + g)["id"].tolist() for g in range(single.per_epoch)]
        assert e1 != e2


def test_eval_batches_cover_the_file_once():
    ds = _Ids(11)
    ids = [i for r in range(3) for b in eval_batches(ds, 2, 3, r) for i in b["id"].tolist()]
    assert sorted(ids) == list(range(11))


@pytest.mark.parametrize("seq_len,joint", [(40, False), (12, False), (40, True)])
def test_a_steps_token_count_comes_from_the_lengths_on_every_rank(tmp_path, seq_len, joint, monkeypatch):
    """global_tokens(g): the loss-mask sum of global batch g over all ranks, from the lengths
    (what the step divides by), equal to the collated batches' own counts; with pin_memory
    every tensor of a batch is page-locked (for its non_blocking copy to a GPU)."""
    g = torch.Generator().manual_seed(1)
    rows = [(torch.randint(0, 100, (int(torch.randint(3, 14, (1,), generator=g)),), generator=g).tolist(),
             torch.randint(0, 100, (int(torch.randint(1, 8, (1,), generator=g)),), generator=g).tolist())
            for _ in range(11)]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"context": c, "completion": d}) + "\n" for c, d in rows))
    ds = FT_Dataset(str(path), 3, seq_len, joint_lm=joint)
    assert [ds.loss_tokens(i) for i in range(11)] == [int(ds[i]["mask"].sum()) for i in range(11)]
    ranks = [BatchStream(ds, 2, world_size=3, rank=r, seed=4) for r in range(3)]
    for step in range(2 * ranks[0].per_epoch):
        want = sum(r.batch(step)["n_tokens"] for r in ranks)
        assert all(r.global_tokens(step) == want for r in ranks)
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: pinned.append(t) or t)
    batch = BatchStream(ds, 2, seed=4, pin_memory=True).batch(0)
    assert {id(t) for t in pinned} == {id(v) for v in batch.values() if torch.is_tensor(v)}
