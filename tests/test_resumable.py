"""tasks.resumable.Resumable and io.resume.ResumeFiles: where a resumable pass saves its state
and where a resumed one starts."""

from types import SimpleNamespace

from cnntool.core.sharding import Shard
from cnntool.io.resume import ResumeFiles
from cnntool.tasks.resumable import Resumable


class _Shard:
    """Rank 1 of 2 over 10 images: dataset items 1, 3, 5, 7, 9, in batches of two."""

    shard = Shard(1, 2)
    mine = [1, 3, 5, 7, 9]

    def __init__(self):
        self.starts, self.said, self.read = [], [], 0

    def announce(self, message, warning):
        self.said.append((message, warning))

    def run(self, consumers, title, *, start, on_batch):
        self.starts.append(start)
        rest = self.mine[start:]
        for i in range(0, len(rest), 2):
            on_batch(SimpleNamespace(indices=rest[i : i + 2]))

    def count(self):
        return len(self.mine)


class _Dataset:
    name, paths, arrays = "ten", [], None

    def __len__(self):
        return 10


def test_the_state_is_saved_every_n_batches_and_once_the_shard_is_in():
    saved = []
    state_file = SimpleNamespace(load=lambda: None, save=saved.append)
    Resumable(state_file, resume=False, every=2).run(
        _Shard(), [], "scan", lambda: {"saves": len(saved)}
    )
    # batches (1, 3), (5, 7), (9): after the second one 4 of the shard's images are in; then all 5
    assert saved == [{"saves": 0, "next": 4}, {"saves": 1, "next": 5}]


def test_a_resumed_pass_starts_where_its_state_file_says(tmp_path):
    files = ResumeFiles(tmp_path, "scan", rank=1, distributed=True)
    assert files.path("state.pt").name == ".scan-state.rank1.pt"
    key = {"model": "m", "world": 2}
    fresh = Resumable(files.state(key, _Dataset()), resume=True, every=1)
    assert fresh.missing and fresh.start == 0
    assert (
        fresh.describe() == f"no state file {files.path('state.pt')}: starting from the beginning"
    )
    shard = _Shard()
    fresh.run(shard, [], "scan", lambda: {"seen": 3})
    assert shard.said == [(fresh.describe(), True)] and shard.read == 0
    resumed = Resumable(files.state(key, _Dataset()), resume=True, every=1)
    assert resumed.saved == {"seen": 3, "next": 5} and resumed.start == 5
    assert resumed.describe() == "resuming after 5 images"
    resumed.run(shard, [], "scan", lambda: {"seen": 3}, resumed=3)
    assert shard.starts == [0, 5]
    assert (
        shard.said[1] == ("resuming after 5 images", False) and shard.read == 3
    )  # the saved ones count as read
    files.remove()
    assert not files.path("state.pt").exists()
