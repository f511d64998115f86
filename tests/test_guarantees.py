"""The README's "Guarantees", command by command, as a user meets them (#13):
- a folder with a decompression bomb, a truncated JPEG, a FIFO and a dangling link: every
  dataset command completes, and its stderr counts the 4 skipped files;
- `cnntool … | head -1`: a closed pipe is a normal end (exit 0, nothing on stderr);
- conflicting or out-of-range options are usage errors (exit 2) found before any model loads;
- a resume state left for other files, a second run into the same folder, an empty state:
  one sentence each, never a merge of stale data.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.bad_files import bad_folder, write_good
from tests.helpers import cli_env

pytestmark = pytest.mark.slow

# every command that scans DATA, with options that keep it quick on LeNet-5
DATASET_COMMANDS = {
    "predict": ["predict", "lenet5-mnist", "{data}"],
    "attack": ["attack", "fgsm", "lenet5-mnist", "{data}", "--eps", "0.1"],
    "top-patches": ["visualize", "top-patches", "lenet5-mnist", "{data}", "--layer", "conv1",
                    "--units", "0-1", "--top", "2", "-o", "{out}"],
    "features": ["features", "lenet5-mnist", "{data}", "-o", "{out}/f.npz"],
    "embed": ["embed", "lenet5-mnist", "{data}", "--method", "pca"],
    "diagnose": ["diagnose", "lenet5-mnist", "{data}", "--no-correlation"],
}


def _fill(args, **values):
    return [a.format(**values) for a in args]


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("command", sorted(DATASET_COMMANDS))
def test_every_scan_skips_and_counts_four_bad_files(command, workers, cnntool, tmp_path):
    data = bad_folder(tmp_path / "data")
    result = cnntool(*_fill(DATASET_COMMANDS[command], data=data, out=tmp_path / "out"),
                     "--workers", workers)
    assert result.returncode == 0, result.stderr
    assert "skipped 4 unreadable image(s) of 7" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [
    ["models"],
    ["layers", "lenet5-mnist"],
    ["profile", "lenet5-mnist"],
    ["predict", "lenet5-mnist", "mnist-5k", "--batch-size", "500"],
    ["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "0.1", "--batch-size", "500"],
    ["embed", "lenet5-mnist", "mnist-5k", "--method", "pca", "--batch-size", "500"],
    ["diagnose", "lenet5-mnist", "mnist-5k", "--limit", "200", "--no-correlation"],
    ["gradcheck", "lenet5-mnist"],
    ["visualize", "top-patches", "lenet5-mnist", "mnist-5k", "--layer", "conv1", "--units",
     "0-15", "--top", "4", "--batch-size", "500", "-o", "{out}"],
], ids=lambda args: args[0] if args[0] != "visualize" else args[1])
def test_a_closed_pipe_is_a_normal_end(args, tmp_path):
    command = " ".join([sys.executable, "-m", "cnntool", *_fill(args, out=tmp_path), "-q"])
    result = subprocess.run(["bash", "-c", f"{command} | head -1; exit ${{PIPESTATUS[0]}}"],
                            capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert "Error" not in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("args, words", [
    (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "-0.1"], "outside [0, 1]"),
    (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--eps", "1e400"], "too large"),
    (["attack", "fgsm", "lenet5-mnist", "mnist-5k", "--triptychs", "2"], "needs -o"),
    (["gradcheck", "lenet5-mnist", "--params", "--inputs"], "give one"),
    (["gradcheck", "lenet5-mnist", "--input-size", "-5"], "below 1 pixel"),
    (["embed", "--features", "f.npz", "--layer", "conv1"], "--features file already"),
    (["predict", "lenet5-mnist", "mnist-5k", "--arch", "resnet18"], "drop --arch"),
    (["predict", "x.pt", "mnist-5k", "--weights", "y.pt"], "weight file already"),
])
def test_contradictions_are_usage_errors_before_any_model_loads(args, words, cnntool):
    result = cnntool(*args)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr


def test_profile_refuses_an_absurd_input_size_in_one_sentence(cnntool):
    result = cnntool("profile", "lenet5-mnist", "--input-size", "100000")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _top_patches(cnntool, data, out, *extra):
    return cnntool("visualize", "top-patches", "lenet5-mnist", data, "--layer", "conv1",
                   "--units", "0-1", "--top", "2", "--batch-size", "1", "--checkpoint-every", "1",
                   "-o", out, "-q", "--workers", "0", *extra)


def _data_and_out(tmp_path, images: int, out_exists: bool = True):
    """A folder of `images` good PNGs and the output folder of a top-patches run."""
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_good(data, images)
    if out_exists:
        out.mkdir()
    return data, out


def test_resume_refuses_a_state_saved_for_files_that_changed(cnntool, tmp_path):
    data, out = _data_and_out(tmp_path, 4, out_exists=False)
    state = out / ".top-patches-state.pt"
    first = _top_patches(cnntool, data, out)
    assert first.returncode == 0, first.stderr
    assert not state.exists()  # a finished scan leaves no state behind
    # keep a state by hand, as an interrupted run leaves it, then change one file
    from cnntool.core.data import open_data
    from cnntool.io.resume import StateFile, dataset_fingerprint

    dataset = open_data(str(data))
    key = dict(model="lenet5-mnist", layer="conv1", units="0-1", top=2, per_image=1,
               data=dataset.name, images=len(dataset), world=1)
    StateFile(out, ".top-patches-state.pt", key, dataset_fingerprint(dataset)).save(
        {"topk": None, "next": 2})
    stale = data / "good0.png"
    os.utime(stale, (time.time() + 10, time.time() + 10))  # same name, same size, new time
    resumed = _top_patches(cnntool, data, out, "--resume")
    assert resumed.returncode == 1
    assert "changed since" in resumed.stderr and "Traceback" not in resumed.stderr


def test_an_empty_resume_state_is_one_sentence_not_an_abort(cnntool, tmp_path):
    data, out = _data_and_out(tmp_path, 2)
    (out / ".top-patches-state.pt").write_bytes(b"")
    result = _top_patches(cnntool, data, out, "--resume")
    assert result.returncode == 1, result.stderr
    assert "empty or corrupt" in result.stderr and "aborted" not in result.stderr


def test_two_runs_into_one_folder_do_not_share_a_state(cnntool, tmp_path):
    data, out = _data_and_out(tmp_path, 2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / ".top-patches.lock").write_text(f"{socket.gethostname()}\n{sleeper.pid}\n")
        busy = _top_patches(cnntool, data, out)
        assert busy.returncode == 1
        assert f"PID {sleeper.pid}" in busy.stderr and "another -o" in busy.stderr
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    # its owner is gone: the lock is taken over, the scan runs and leaves no lock behind
    again = _top_patches(cnntool, data, out)
    assert again.returncode == 0, again.stderr
    assert not (out / ".top-patches.lock").exists()
    assert len([json.loads(line) for line in again.stdout.splitlines()]) == 4


def test_nan_weights_make_predict_and_gradcheck_refuse_in_one_sentence(cnntool, tmp_path):
    import torch

    from cnntool.core.zoo import load_builtin

    state = load_builtin("lenet5-mnist").state_dict()
    state["linear2.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    for args in (["predict", tmp_path / "nan.pt", "--arch", "lenet5-mnist", "mnist-5k"],
                 ["gradcheck", tmp_path / "nan.pt", "--arch", "lenet5-mnist"]):
        result = cnntool(*args)
        assert result.returncode == 1, result.stderr
        assert "linear2.weight (1 NaN)" in result.stderr and "meaningless" in result.stderr
        assert "Traceback" not in result.stderr and not result.stdout


def test_a_hit_whose_image_became_unreadable_is_left_out_with_a_reason(tmp_path):
    """Between the scan and the crops a file may go away: that patch is left out and named,
    the others are drawn (io.patches)."""
    from PIL import Image

    from cnntool.errors import DataError
    from cnntool.io.patches import write_top_patches
    from cnntool.tasks.top_patches import Hit, TopPatches

    hits = ((Hit(0, 0, 0, 2.0, (0, 0), (0, 0, 8, 8)), Hit(0, 1, 1, 1.0, (0, 0), (0, 0, 8, 8))),)
    result = TopPatches(layer="conv1", units=(0,), top=2, hits=hits)

    def load(index):
        if index == 1:
            raise DataError("cannot read image gone.png: no such file")
        return Image.new("RGB", (16, 16), (200, 30, 30))

    drawn, lost = write_top_patches(tmp_path, result, load, title="m conv1", tile_size=32)
    assert [hit.index for hit in drawn] == [0]
    assert lost == ["cannot read image gone.png: no such file"]
    assert Image.open(tmp_path / "unit_0000.png").getpixel((16, 30))[:3] == (200, 30, 30)


# --- #21 faults ---
# A full disk, a read-only output, a name too long, a peer that died: one sentence each, exit 1,
# and no scratch file left behind.

def _features_in_process(capsys, data, out):
    """`cnntool features` in this process (so that a writer can be made to fail): its exit code
    and stderr."""
    from cnntool.cli.main import main

    with pytest.raises(SystemExit) as ended:
        main(["features", "lenet5-mnist", str(data), "-o", str(out), "-q", "--workers", "0"])
    return ended.value.code, capsys.readouterr().err


@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "the disk is full (errno 28)"),
    (errno.EROFS, "the file system is read-only (errno 30)"),
    (errno.EACCES, "permission denied (errno 13)"),
    (errno.ENAMETOOLONG, "the name is too long (errno 36)"),
])
def test_an_output_that_cannot_be_written_is_one_sentence_and_leaves_no_scratch_file(
        code, words, capsys, monkeypatch, tmp_path):
    import cnntool.io.npz

    data, out = _data_and_out(tmp_path, 3)

    def failing(handle, *args, **kwargs):  # half a file written, then the disk says no
        handle.write(b"PK" * 1000)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(cnntool.io.npz, "write_npz", failing)
    status, stderr = _features_in_process(capsys, data, out / "f.npz")
    assert status == 1
    assert stderr.strip() == f"error: cannot write {out / 'f.npz'}: {words}", stderr
    assert os.listdir(out) == []  # neither the .part of the output nor the features' spools


def test_a_spool_on_a_full_disk_is_one_sentence_and_is_removed(capsys, monkeypatch, tmp_path):
    """A buffered file on a full disk fails at the write and again when it is closed (its
    buffer cannot be flushed); the scratch file must go all the same."""
    from cnntool.tasks.features import FeatureSpool

    class FullDisk:  # what a BufferedWriter does when the disk is full
        def __init__(self, file):
            self.file = file
            self.closed = False

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.closed = True
            self.file.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.file, name)

    made = FeatureSpool.__init__

    def on_a_full_disk(self, folder=None):
        made(self, folder)
        self._file = FullDisk(self._file)

    monkeypatch.setattr(FeatureSpool, "__init__", on_a_full_disk)
    data, out = _data_and_out(tmp_path, 3)
    status, stderr = _features_in_process(capsys, data, out / "f.npz")
    assert status == 1
    assert stderr.startswith(f"error: cannot write the scratch file {out}/.cnntool-features."), stderr
    assert stderr.strip().endswith("the disk is full (errno 28)") and len(stderr.splitlines()) == 1
    assert os.listdir(out) == []


def test_a_file_size_limit_for_real_is_one_sentence_and_leaves_no_scratch_file(cnntool, tmp_path):
    """`ulimit -f`: the kernel refuses writes past the limit (EFBIG) as it does on a full disk."""
    import resource

    data, out = _data_and_out(tmp_path, 3)

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error from write(), not a signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    result = subprocess.run(
        [sys.executable, "-m", "cnntool", "features", "lenet5-mnist", data, "--layer", "conv1",
         "--pooling", "flatten", "-o", out / "f.npz", "-q", "--workers", "0"],
        preexec_fn=limited, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 1
    assert "cannot write the scratch file" in result.stderr and "(errno 27)" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert os.listdir(out) == []


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_stdout_on_a_full_device_is_one_sentence(tmp_path):
    data, _ = _data_and_out(tmp_path, 3, out_exists=False)
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "cnntool", "predict", "lenet5-mnist", data, "-q"],
                                stdout=full, stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 1
    assert result.stderr == "error: cannot write stdout: the disk is full (errno 28)\n"


def test_an_output_name_of_250_bytes_works_and_a_longer_one_is_refused_before_the_scan(cnntool, tmp_path):
    data, out = _data_and_out(tmp_path, 2)
    name = "n" * 246 + ".npz"  # its scratch name, with PID, host and suffix, is over 255 bytes
    result = cnntool("features", "lenet5-mnist", data, "-o", out / name, "-q", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert os.listdir(out) == [name]
    longer = out / ("n" * 252 + ".npz")
    result = cnntool("features", "lenet5-mnist", data, "-o", longer, "--workers", "0")
    assert result.returncode == 1
    assert result.stderr == f"error: cannot write {longer}: the name is too long (errno 36)\n"
    assert os.listdir(out) == [name]


def test_names_that_are_not_utf8_are_read_and_printed_and_resumed(tmp_path):
    """b'\\xff.png' in a DATA folder is an image like any other: predicted, printed as its bytes
    (also where stdout would refuse them), fingerprinted for --resume."""
    from PIL import Image

    data, out = _data_and_out(tmp_path, 2)
    Image.new("RGB", (40, 30), (10, 200, 30)).save(os.fsencode(data) + b"/\xff.png")
    env = cli_env(PYTHONIOENCODING="utf-8")  # a strict stdout, as in en_US.UTF-8
    predicted = subprocess.run([sys.executable, "-m", "cnntool", "predict", "lenet5-mnist", data, "-q"],
                               capture_output=True, env=env, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    paths = [json.loads(line.decode("utf-8", "surrogateescape"))["path"] for line in predicted.stdout.splitlines()]
    assert [os.fsencode(p) for p in paths] == [os.fsencode(data / n) for n in ("good0.png", "good1.png")] + \
        [os.fsencode(data) + b"/\xff.png"]
    resumed = subprocess.run([sys.executable, "-m", "cnntool", "visualize", "top-patches", "lenet5-mnist",
                              data, "--layer", "conv1", "--units", "0", "--top", "3", "-o", out,
                              "--resume", "-q", "--workers", "0"], capture_output=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count(b"\xff.png") == 1


def test_a_nul_byte_in_a_path_list_is_skipped_and_counted(tmp_path):
    from tests.helpers import CnnTool

    data, _ = _data_and_out(tmp_path, 2, out_exists=False)
    listing = b"\n".join([os.fsencode(data / "good0.png"), b"bad\x00name.png", os.fsencode(data / "good1.png")])
    result = subprocess.run([sys.executable, "-m", "cnntool", "predict", "lenet5-mnist", "-", "-q"],
                            input=listing, capture_output=True, env=CnnTool().env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert b"skipped 1 unreadable image(s) of 3" in result.stderr
    assert b"the name contains a NUL byte" in result.stderr and b"Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["option", "environment"])
def test_a_rank_whose_peers_never_come_gives_up_in_one_sentence(how, tmp_path):
    """Started by srun or mpirun (RANK and WORLD_SIZE, no torchrun agent to stop it), a rank
    whose peer died waited torch's 30 minutes; now --dist-timeout (CNNTOOL_DIST_TIMEOUT)."""
    from tests.helpers import CnnTool, free_port

    data, _ = _data_and_out(tmp_path, 2, out_exists=False)
    env = cli_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                  MASTER_PORT=str(free_port()), **({"CNNTOOL_DIST_TIMEOUT": "2"} if how == "environment" else {}))
    extra = ["--dist-timeout", "2"] if how == "option" else []
    result = CnnTool(env=env, timeout=90)("predict", "lenet5-mnist", data, "-q", *extra)
    assert result.returncode == 1
    assert "error: rank 0 waited 2 s for the other ranks; one of them may have died" in result.stderr
    assert "Traceback" not in result.stderr and not result.stdout


@pytest.mark.parametrize("message, words", [
    ("[gloo/transport/tcp/unbound_buffer.cc:129] Timed out waiting 4000ms for send operation to complete",
     "waited 600 s for the other ranks; one of them may have died"),
    ("[gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:10396: Connection reset by peer.",
     "lost its connection to the other ranks; one of them may have died"),
])
def test_a_peer_that_dies_or_hangs_during_a_merge_is_one_sentence(message, words, monkeypatch):
    """What gloo raises at a collective when a peer is gone (at once) or hangs (after the
    timeout), seen by core.sharding.gather."""
    import torch.distributed

    from cnntool.core.sharding import Shard, gather
    from cnntool.errors import DistributedError

    def gone(*_args):
        raise RuntimeError(message)

    monkeypatch.setattr(torch.distributed, "all_gather_object", gone)
    with pytest.raises(DistributedError, match=f"^rank 1 {words}$"):
        gather({"state": 1}, Shard(1, 2, timeout=600))
