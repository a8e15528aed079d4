"""Generation caches: the keys and values a GPT has computed, and where new tokens go.

A cache tells the model three things about the tokens it is given: their positions, the
attention mask over the cached keys, and where their keys/values are written. Two kinds:

- `KVCache`: B sequences that all have the same length (one prompt's prefill, the beams of beam
  search), for `GPT.forward`. New tokens append at the shared length; T tokens at once are a
  prefill chunk.
- `SlotCache`: the engine's running sequences, one slot each, every slot with its own length (the
  continuous-batching scheduler's cache), for `GPT.decode`: one token per slot per step, through a
  `StepKV` (tensors only, so the step can be compiled). A sequence joins by copying its prefilled
  `KVCache` into a free slot and leaves by freeing its slot. The slots in use are kept at rows
  0 .. rows-1, so a step reads a view of the buffers and never gathers them.

Both preallocate `[slots, n_kv_head, max_len, head_dim]` per layer once; nothing is allocated per step
beyond the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Layout:
    """What a forward pass needs from its cache: positions `[T]` (shared) or `[B, T]` (per row), and
    the attention mask (None with `causal`: SDPA's own triangle; None without: every key)."""

    positions: torch.Tensor
    mask: torch.Tensor | None
    causal: bool
    end: int  # the longest sequence after this pass, checked against the context
    start: int | None = None  # shared positions: they are start .. start + T - 1 (tables are sliced, not gathered)


def _buffers(n_layer: int, shape: tuple[int, ...], device, dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return ([torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)],
            [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)])


class KVCache:
    """Preallocated keys and values of every layer, `[B, n_kv_head, max_len, head_dim]` each, with
    one shared filled length. The model writes the new tokens' K/V at `length` and then advances it.

    `pad` (optional, `[B]` long) runs left-padded rows as `transformers` does with an attention mask:
    row b's first `pad[b]` tokens are padding, which no query attends to, and its positions count
    from its first real token. (The engine does not pad: each sequence has its own slot; the
    export's tests use this to compare with transformers' padded batches.)"""

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        self.k, self.v = _buffers(n_layer, (batch_size, n_kv_head, max_len, head_dim), device, dtype)
        self.max_len = max_len
        self.length = 0
        self.pad: torch.Tensor | None = None

    def layout(self, T: int, device: torch.device) -> Layout:
        past = self.length
        pos = torch.arange(past, past + T, device=device)
        if self.pad is not None:
            pad = self.pad.to(device)
            return Layout((pos[None, :] - pad[:, None]).clamp(min=0), padding_mask(pad, past, T), False, past + T)
        if not past or T == 1:
            # A first chunk is plainly causal; one new token after a filled cache sees every key.
            return Layout(pos, None, not past, past + T, past)
        # Several new tokens after a filled cache: query i sees keys 0 .. past + i. (SDPA's
        # is_causal aligns the triangle top-left, which is wrong when keys outnumber queries.)
        mask = pos[:, None] >= torch.arange(past + T, device=device)[None, :]
        return Layout(pos, mask, False, past + T, past)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new K/V of `layer` after the filled part; return all keys and values so far."""
        end = self.length + k.shape[2]
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def reset(self) -> None:
        self.length = 0


def padding_mask(pad: torch.Tensor, start: int, T: int) -> torch.Tensor:
    """Attention mask `[B, 1, T, start + T]` for left-padded rows: query i (column start + i) sees the
    keys up to its own column that are not padding. A padding query sees itself only: a row with no
    key at all would give NaN, and NaN keys/values in the cache poison every later step."""
    keys = torch.arange(start + T, device=pad.device)
    queries = torch.arange(start, start + T, device=pad.device)[:, None]
    allowed = (keys[None, None, :] <= queries[None]) & (keys[None, None, :] >= pad[:, None, None])
    return (allowed | (keys[None, :] == queries)[None])[:, None]


class SlotCache:
    """Keys and values of up to `slots` sequences with a length each (see the module docstring).

    (`model/kv_int8.py` holds them in int8 instead, behind the same interface.)

    Rows 0 .. `rows`-1 are in use. A decode step (`GPT.decode`) takes one token per row in use: row
    b's token goes to position `lengths[b]` and attends to that row's keys 0 .. lengths[b] (a boolean
    mask over the longest row, one SDPA call for all rows: see `StepKV`)."""

    def __init__(self, n_layer: int, slots: int, n_kv_head: int, max_len: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        self.k, self.v = _buffers(n_layer, (slots, n_kv_head, max_len, head_dim), device, dtype)
        self.slots, self.max_len = slots, max_len
        self.lengths: list[int] = []  # per row in use, in Python: no device sync to find the longest
        self._positions: torch.Tensor | None = None  # the lengths as a tensor, kept while no row joins or leaves

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def buffers(self) -> tuple[list[torch.Tensor], ...]:
        """What a decode step reads and writes, as `view_type(buffers, ...)` takes it."""
        return self.k, self.v

    def positions(self) -> torch.Tensor:
        """Each row's next position (its length), `[rows]` long, on the cache's device."""
        if self._positions is None:
            self._positions = torch.tensor(self.lengths, dtype=torch.long, device=self.buffers()[0][0].device)
        return self._positions

    def advance(self, n: int = 1) -> None:
        self.lengths = [n_ + n for n_ in self.lengths]
        if self._positions is not None:
            self._positions.add_(n)  # in place: no new tensor per step

    # ---- sequences join and leave --------------------------------------------------------------

    def grown(self, slots: int) -> SlotCache:
        """A cache of `slots` slots holding this one's rows (so memory follows the sequences that
        actually run together, not the limit: the engine grows it by doubling)."""
        k0 = self.k[0]
        new = SlotCache(len(self.k), slots, k0.shape[1], self.max_len, k0.shape[3], device=k0.device, dtype=k0.dtype)
        n = max(self.lengths, default=0)
        for layer in range(len(self.k)):
            new.k[layer][:self.rows, :, :n] = self.k[layer][:self.rows, :, :n]
            new.v[layer][:self.rows, :, :n] = self.v[layer][:self.rows, :, :n]
        new.lengths = list(self.lengths)
        return new

    def append(self, src: KVCache, row: int = 0, length: int | None = None) -> int:
        """A sequence joins: copy `length` tokens (default all) of row `row` of a prefilled cache into
        the next free slot; return its row."""
        if self.rows >= self.slots:
            raise RuntimeError(f"all {self.slots} cache slots are in use")
        n = src.length if length is None else length
        b = self.rows
        for layer in range(len(self.k)):
            self.k[layer][b, :, :n] = src.k[layer][row, :, :n]
            self.v[layer][b, :, :n] = src.v[layer][row, :, :n]
        self.lengths.append(n)
        self._positions = None
        return b

    def row_cache(self, row: int) -> KVCache:
        """Slot `row` as a one-sequence `KVCache` over the same buffers (views), at its length: a
        forward pass of several tokens through it writes their keys and values into the slot (the
        target's check of a draft's proposals, `infer/speculative.py`). The slot's length is not
        moved: the caller says how many of those tokens it keeps (`truncate`)."""
        view = KVCache.__new__(KVCache)
        view.k = [k[row:row + 1] for k in self.k]
        view.v = [v[row:row + 1] for v in self.v]
        view.max_len, view.length, view.pad = self.max_len, self.lengths[row], None
        return view

    def truncate(self, row: int, length: int) -> None:
        """Slot `row` holds `length` tokens from now on (keys written past it are overwritten later)."""
        self.lengths[row] = length
        self._positions = None

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows, in this order, as rows 0 .. len(rows)-1 (sequences left: their slots
        are free). Each kept row that moves costs one copy of its keys/values; `compaction` below picks
        an order that moves only the rows needed to fill the holes."""
        for new, old in enumerate(rows):
            if new != old:
                n = self.lengths[old]
                for layer in range(len(self.k)):
                    self.k[layer][new, :, :n] = self.k[layer][old, :, :n]
                    self.v[layer][new, :, :n] = self.v[layer][old, :, :n]
        self.lengths = [self.lengths[r] for r in rows]
        self._positions = None


class StepKV:
    """One decode step's view of a SlotCache's buffers, made of tensors only (so a compiled step
    traces it without guarding on Python state): row b's new key and value are written in place at
    column `positions[b]`, and its query sees columns 0 .. positions[b] of the first `span` columns
    (`span` > every position; padding it to a bucket changes nothing but the work). `masked=False`
    says that every row's position is span - 1 (one row, or rows of one length, with an exact span):
    then every column is seen and SDPA runs without a mask."""

    def __init__(self, buffers: tuple[list[torch.Tensor], ...], positions: torch.Tensor, span: int, masked: bool = True):
        self.k, self.v = buffers
        self.positions, self.span = positions, span
        B = positions.shape[0]
        self.rows = torch.arange(B, device=positions.device)
        self.mask = None
        if masked:
            self.mask = (torch.arange(span, device=positions.device)[None, :] <= positions[:, None])[:, None, None, :]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B = self.rows.shape[0]
        self.k[layer][self.rows, :, self.positions] = k[:, :, 0]
        self.v[layer][self.rows, :, self.positions] = v[:, :, 0]
        return self.k[layer][:B, :, :self.span], self.v[layer][:B, :, :self.span]


def compaction(rows: int, leaving: set[int]) -> list[int]:
    """The rows to keep, in their new order, when `leaving` rows go: each hole below the new count is
    filled by a surviving row from the end, so at most len(leaving) rows move (and a row only moves
    down, never onto a row still to be read)."""
    keep = [r for r in range(rows) if r not in leaving]
    count = len(keep)
    order = list(range(count))
    tail = [r for r in keep if r >= count]  # survivors past the new end, to move into the holes
    holes = [r for r in range(count) if r in leaving]
    for hole, src in zip(holes, tail):
        order[hole] = src
    return order


class PrefixCache:
    """The keys and values of recent prompts, found again by their leading tokens, so a prompt that
    starts like an earlier one (a system prompt, few-shot examples) copies that part instead of
    recomputing it. vLLM's automatic prefix caching, without paging: matches are whole blocks of
    `block` tokens, found through a hash chained block by block (`hash(previous, block tokens)`) and
    then checked token by token; entries are the prompts' own prefill caches, kept as they are (no
    copy), least recently used first out beyond `capacity` tokens. `capacity = 0` turns it off.
    """

    def __init__(self, capacity: int, block: int = 16):
        import collections

        self.capacity, self.block = capacity, block
        self._entries: collections.OrderedDict[int, tuple[list[int], KVCache, list[int]]] = collections.OrderedDict()
        self._index: dict[int, int] = {}  # chained hash of the first k blocks -> entry
        self._size = 0
        self._next = 0

    def _chain(self, ids: list[int], blocks: int) -> list[int]:
        out, h = [], 0
        for i in range(blocks):
            h = hash((h, tuple(ids[i * self.block:(i + 1) * self.block])))
            out.append(h)
        return out

    def lookup(self, ids: list[int]) -> tuple[KVCache | None, int]:
        """The cache holding the longest known prefix of `ids` that leaves at least one token to
        compute (the last token's logits are needed), and its length (0: none)."""
        if not self.capacity or not self._index:
            return None, 0
        for k, h in reversed(list(enumerate(self._chain(ids, (len(ids) - 1) // self.block), 1))):
            key = self._index.get(h)
            if key is None:
                continue
            entry_ids, cache, _ = self._entries[key]
            n = k * self.block
            if entry_ids[:n] == ids[:n]:  # not a hash collision
                self._entries.move_to_end(key)
                return cache, n
        return None, 0

    def insert(self, ids: list[int], cache: KVCache) -> None:
        """Remember a prefilled prompt (its cache must hold `ids` and not change afterwards)."""
        blocks = len(ids) // self.block
        if not self.capacity or not blocks or len(ids) > self.capacity:
            return
        key, self._next = self._next, self._next + 1
        hashes = self._chain(ids, blocks)
        self._entries[key] = (ids, cache, hashes)
        for h in hashes:
            self._index[h] = key  # the newest entry answers for a shared prefix
        self._size += len(ids)
        while self._size > self.capacity:
            old, (old_ids, _, old_hashes) = self._entries.popitem(last=False)
            self._size -= len(old_ids)
            for h in old_hashes:
                if self._index.get(h) == old:
                    del self._index[h]
            # A prefix the evicted entry answered for may still be held by another entry; it is
            # found again when that entry's prompt or a later one is inserted.

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self._size = 0

    def __len__(self) -> int:
        return len(self._entries)


SlotCache.view_type = StepKV  # what GPT.decode reads a SlotCache through
