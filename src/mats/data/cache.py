"""On-disk cache of CLAP text embeddings of a corpus.

Training and the Santa memory bank need the CLAP text embedding of every description in the corpus.
Encoding millions of texts takes hours on a CPU, so it is done once per (corpus, CLAP) pair and kept:

- **Key**: sha256 over the texts in order (each one length-prefixed, so ``["ab", "c"]`` and
  ``["a", "bc"]`` differ), the CLAP fingerprint and the embedding width. A changed corpus or CLAP
  therefore lands in a new folder; stale folders are removed with :meth:`EmbeddingCache.prune`.
- **Layout**: ``root/<key>/shard-00000.npy`` ... each holding ``shard_size`` consecutive rows
  (float32, [rows, dim]), written to a temporary name and renamed, so a shard file is either
  complete or absent. ``manifest.json`` records rows, dim, shard size, the CLAP fingerprint and a
  ``complete`` flag. When every shard is there they are merged into one ``embeddings.npy`` that is
  returned as a read-only memory map (the shards are then deleted unless ``keep_shards``).
- **Resume**: an interrupted run keeps its finished shards; the next call computes only the missing
  ones.
- **Data parallel**: rank ``r`` of ``w`` computes the shards ``i`` with ``i % w == r``. With
  ``torch.distributed`` initialised the ranks meet at barriers; with ``rank``/``world_size`` given
  by hand (array jobs, several machines on a shared disk) they meet through the file system (rank 0
  waits for the other ranks' shards, the others wait for rank 0's merge).
- **Dedupe**: identical texts inside a shard are encoded once (label-derived corpora repeat a lot).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

__all__ = ["EmbeddingCache", "texts_digest", "cache_key", "default_cache_root"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MERGED = "embeddings.npy"


def default_cache_root() -> Path:
    from ..store import mats_home
    return mats_home() / "embeddings"


def texts_digest(texts: Iterable[str]) -> tuple[str, int]:
    """sha256 over the texts in order (length-prefixed UTF-8) and the number of texts."""
    h = hashlib.sha256()
    n = 0
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"text #{n} is {type(t).__name__}, not str")
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
        n += 1
    return h.hexdigest(), n


def _clap_fingerprint(clap) -> str:
    fp = clap.fingerprint() if hasattr(clap, "fingerprint") else getattr(clap, "name", type(clap).__name__)
    return str(fp)


def cache_key(texts: Sequence[str], clap, *, _digest: tuple[str, int] | None = None) -> str:
    """Folder name of the embeddings of ``texts`` under ``clap`` (32 hex digits)."""
    digest, n = _digest if _digest is not None else texts_digest(texts)
    h = hashlib.sha256()
    h.update(f"mats-text-embeddings/v{FORMAT_VERSION}\n".encode())
    h.update(digest.encode() + b"\n")
    h.update(f"{n}\n".encode())
    h.update(_clap_fingerprint(clap).encode("utf-8") + b"\n")
    h.update(f"{int(clap.dim)}\n".encode())
    return h.hexdigest()[:32]


def _dist_info() -> tuple[int, int, bool]:
    """(rank, world size, initialised) of torch.distributed, or (0, 1, False)."""
    try:
        import torch.distributed as dist
    except Exception:  # pragma: no cover - torch is a dependency
        return 0, 1, False
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EmbeddingCache:
    """Sharded, resumable, data-parallel cache of CLAP text embeddings.

    >>> cache = EmbeddingCache()                     # $MATS_HOME/embeddings
    >>> emb = cache.embed(texts, clap)               # float32 [len(texts), clap.dim], read-only memmap
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()

    # -- paths ----------------------------------------------------------------------------------
    def key(self, texts: Sequence[str], clap) -> str:
        return cache_key(texts, clap)

    def path(self, texts: Sequence[str], clap) -> Path:
        return self.root / self.key(texts, clap)

    @staticmethod
    def shard_name(i: int) -> str:
        return f"shard-{i:05d}.npy"

    # -- lookup ---------------------------------------------------------------------------------
    def read_manifest(self, key: str) -> dict | None:
        try:
            return json.loads((self.root / key / MANIFEST).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_cached(self, texts: Sequence[str], clap) -> bool:
        m = self.read_manifest(self.key(texts, clap))
        return bool(m and m.get("complete"))

    def load(self, key: str) -> np.ndarray:
        """The merged embeddings of a complete entry as a read-only memory map."""
        d = self.root / key
        m = self.read_manifest(key)
        if not m or not m.get("complete"):
            raise FileNotFoundError(f"no complete embedding cache entry {key} under {self.root}")
        arr = np.load(d / MERGED, mmap_mode="r")
        if arr.shape != (m["n"], m["dim"]) or arr.dtype != np.float32:
            raise RuntimeError(f"embedding cache entry {d} is inconsistent with its manifest; remove it")
        return arr

    def entries(self) -> list[dict]:
        """Manifests of all entries (with ``key``, ``path`` and ``bytes`` added)."""
        out = []
        if not self.root.is_dir():
            return out
        for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
            m = self.read_manifest(d.name) or {"complete": False}
            m = dict(m, key=d.name, path=str(d),
                     bytes=sum(f.stat().st_size for f in d.iterdir() if f.is_file()))
            out.append(m)
        return out

    def remove(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def prune(self, keep: Iterable[str] = (), *, incomplete: bool = True,
              older_than_days: float | None = None, dry_run: bool = False) -> list[str]:
        """Remove entries whose key is not in ``keep``; returns the removed keys.

        ``keep`` may hold keys or folder paths. ``incomplete=False`` spares unfinished entries (a run
        may still be filling them); ``older_than_days`` only removes entries not touched for that long.
        """
        keep_keys = {Path(k).name for k in keep}
        removed = []
        now = time.time()
        for e in self.entries():
            if e["key"] in keep_keys:
                continue
            if not incomplete and not e.get("complete"):
                continue
            if older_than_days is not None:
                mtime = max((f.stat().st_mtime for f in Path(e["path"]).iterdir()), default=0.0)
                if now - mtime < older_than_days * 86400:
                    continue
            removed.append(e["key"])
            if not dry_run:
                self.remove(e["key"])
        return removed

    # -- compute --------------------------------------------------------------------------------
    def embed(
        self,
        texts: Sequence[str],
        clap,
        batch_size: int = 256,
        shard_size: int = 65536,
        progress: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        *,
        keep_shards: bool = False,
        timeout: float = 48 * 3600.0,
        poll_interval: float = 1.0,
    ) -> np.ndarray:
        """CLAP text embeddings of ``texts`` (float32 [N, clap.dim], a read-only memory map).

        Computed on the first call, read from disk afterwards. ``rank``/``world_size`` default to
        torch.distributed's when it is initialised, else 0/1. ``timeout`` bounds how long a rank
        waits for the others when they synchronise through the file system.
        """
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not a single string")
        if shard_size < 1 or batch_size < 1:
            raise ValueError("shard_size and batch_size must be positive")
        d_rank, d_world, d_init = _dist_info()
        rank = d_rank if rank is None else int(rank)
        world = (d_world if world_size is None else int(world_size))
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"invalid rank {rank} for world size {world}")
        use_dist = d_init and d_world == world and d_rank == rank

        dim = int(clap.dim)
        fingerprint = _clap_fingerprint(clap)
        digest, n = texts_digest(texts)
        if n == 0:
            return np.zeros((0, dim), np.float32)
        key = cache_key(texts, clap, _digest=(digest, n))
        folder = self.root / key

        manifest = self.read_manifest(key)
        if manifest and manifest.get("complete") and (folder / MERGED).is_file():
            return self.load(key)
        if manifest and manifest.get("n") == n and manifest.get("dim") == dim:
            shard_size = int(manifest["shard_size"])  # resume with the layout already on disk
        n_shards = (n + shard_size - 1) // shard_size
        folder.mkdir(parents=True, exist_ok=True)
        base = {
            "format": FORMAT_VERSION, "n": n, "dim": dim, "shard_size": shard_size, "n_shards": n_shards,
            "clap": fingerprint, "clap_name": getattr(clap, "name", type(clap).__name__),
            "texts_sha256": digest, "dtype": "float32",
        }
        if rank == 0 and not manifest:
            self._write_manifest(folder, dict(base, complete=False, created=time.time()))

        # A merged file without the complete flag: interrupted after the merge, nothing to compute.
        merged = lambda: self._merged_ok(folder / MERGED, n, dim)  # noqa: E731
        mine = [i for i in range(n_shards) if i % world == rank]
        todo = [] if merged() else [i for i in mine if not self._shard_ok(folder, i, shard_size, n, dim)]
        self._compute(texts, clap, folder, todo, mine, shard_size, n, dim, batch_size,
                      progress and rank == 0, rank, world)

        # Everyone's shards exist -> rank 0 merges -> everyone reads the merged file.
        if world > 1:
            if use_dist:
                import torch.distributed as dist
                dist.barrier()
            elif rank == 0:
                self._wait(lambda: merged() or all(self._shard_ok(folder, i, shard_size, n, dim)
                                                   for i in range(n_shards)),
                           timeout, poll_interval, f"shards of the other ranks in {folder}")
        if rank == 0 and not (self.read_manifest(key) or {}).get("complete"):
            self._merge(folder, n_shards, shard_size, n, dim)
            created = (manifest or {}).get("created", time.time())
            self._finish(folder, dict(base, created=created), n_shards, keep_shards)
        if world > 1:
            if use_dist:
                import torch.distributed as dist
                dist.barrier()
            else:
                self._wait(lambda: bool((self.read_manifest(key) or {}).get("complete")),
                           timeout, poll_interval, f"rank 0 to finish {folder}")
        return self.load(key)

    # -- internals ------------------------------------------------------------------------------
    @staticmethod
    def _write_manifest(folder: Path, manifest: dict) -> None:
        _atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())

    def _shard_ok(self, folder: Path, i: int, shard_size: int, n: int, dim: int) -> bool:
        rows = min(shard_size, n - i * shard_size)
        try:
            a = np.load(folder / self.shard_name(i), mmap_mode="r")
        except (FileNotFoundError, ValueError, OSError):
            return False
        return a.shape == (rows, dim) and a.dtype == np.float32

    def _compute(self, texts, clap, folder, todo, mine, shard_size, n, dim, batch_size, progress, rank, world):
        if not todo:
            return
        bar = None
        if progress:
            from tqdm.auto import tqdm
            mine_rows = sum(min(shard_size, n - i * shard_size) for i in mine)
            todo_rows = sum(min(shard_size, n - i * shard_size) for i in todo)
            desc = "CLAP text embeddings" + (f" (rank {rank}/{world})" if world > 1 else "")
            bar = tqdm(total=mine_rows, initial=mine_rows - todo_rows, unit="text", desc=desc,
                       file=sys.stderr, dynamic_ncols=True)
        try:
            for i in todo:
                lo, hi = i * shard_size, min(n, (i + 1) * shard_size)
                chunk = [texts[j] for j in range(lo, hi)]
                # Dedupe within the shard: encode each distinct text once, then scatter back.
                index: dict[str, int] = {}
                inverse = np.fromiter((index.setdefault(t, len(index)) for t in chunk), dtype=np.int64,
                                      count=len(chunk))
                # Encoded shortest first when they span several batches: a batch of similar lengths
                # pads little (faster: docs/speed.md, "Text encoding"); each text's embedding changes only in
                # float rounding (padding is masked), and the rows are put back in order below.
                order = np.arange(len(index))
                if len(index) > batch_size:
                    order = np.argsort(np.fromiter((len(t) for t in index), dtype=np.int64, count=len(index)),
                                       kind="stable")
                unique = [t for t in index]
                unique = [unique[k] for k in order]
                parts = []
                shown = 0
                for b in range(0, len(unique), batch_size):
                    want = min(batch_size, len(unique) - b)
                    e = np.asarray(clap.encode_text(unique[b:b + want], batch_size=batch_size),
                                   dtype=np.float32)
                    if e.shape != (want, dim):
                        raise RuntimeError(f"{type(clap).__name__}.encode_text returned shape {e.shape}, "
                                           f"expected ({want}, {dim})")
                    parts.append(e)
                    if bar is not None:  # corpus rows, in proportion to the distinct texts done
                        step = (hi - lo) * (b + want) // len(unique) - shown
                        bar.update(step)
                        shown += step
                emb = np.empty((len(unique), dim), np.float32)
                emb[order] = np.concatenate(parts)
                if not np.isfinite(emb).all():
                    raise RuntimeError(f"non-finite CLAP text embeddings in shard {i} (rows {lo}:{hi})")
                _atomic_save_npy(folder / self.shard_name(i), np.ascontiguousarray(emb[inverse]))
        finally:
            if bar is not None:
                bar.close()

    def _finish(self, folder: Path, manifest: dict, n_shards: int, keep_shards: bool) -> None:
        """Mark the entry complete (after the merged file is in place), then drop the shards."""
        self._write_manifest(folder, dict(manifest, complete=True, finished=time.time()))
        if not keep_shards:
            for i in range(n_shards):
                (folder / self.shard_name(i)).unlink(missing_ok=True)
        for stale in folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    def _merge(self, folder: Path, n_shards: int, shard_size: int, n: int, dim: int) -> None:
        target = folder / MERGED
        if not self._merged_ok(target, n, dim):
            tmp = folder / f".{MERGED}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
                for i in range(n_shards):
                    lo = i * shard_size
                    shard = np.load(folder / self.shard_name(i), mmap_mode="r")
                    out[lo:lo + len(shard)] = shard
                out.flush()
                del out
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)

    @staticmethod
    def _merged_ok(path: Path, n: int, dim: int) -> bool:
        try:
            a = np.load(path, mmap_mode="r")
        except (FileNotFoundError, ValueError, OSError):
            return False
        return a.shape == (n, dim) and a.dtype == np.float32

    @staticmethod
    def _wait(cond, timeout: float, interval: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)
