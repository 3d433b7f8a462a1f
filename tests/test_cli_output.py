"""What a user sees of `tfxfer train`: no TensorFlow start-up lines unless asked for, one plain line
per epoch in a file or a pipe, a live bar on a terminal."""
import os
import pty
import re
import subprocess
import sys

import pytest

from helpers import write_config

# TensorFlow's own C++/absl lines, as TensorFlow 2.21 prints them on a machine without a GPU.
STARTUP = re.compile(r"cudart_stub|cuda_platform|cuInit|absl|oneDNN|cpu_feature_guard|^[IWE]\d{4} ", re.M)
EPOCH = re.compile(r"^(\S+) epoch (\d+)/(\d+): loss [\d.]+  top1 [\d.]+  val top1 [\d.]+  lr \S+  \d+ img/s$", re.M)


def command(config, *flags):
    return [sys.executable, "-m", "tfxfer", *flags, "train", "--config", str(config), "--treatment", "BnB",
            "--n", "4"]


def user_env():
    """The environment of a user who has not set TF_CPP_MIN_LOG_LEVEL (the test session has)."""
    return {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli_output")
    return write_config(tmp / "tiny.yaml", tmp / "runs", recipe={"epochs": 2})


def test_piped_output_is_one_plain_line_per_epoch_without_startup_lines(config):
    res = subprocess.run(command(config), env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout
    log = res.stdout
    assert "\x1b" not in log and "\r" not in log, repr(log[:500])
    assert not STARTUP.search(log), log
    epochs = [(m[1][:m[1].index("-")], int(m[2]), int(m[3])) for m in EPOCH.finditer(log)]
    assert epochs == [("baseB", 1, 2), ("baseB", 2, 2), ("BnB4", 1, 2), ("BnB4", 2, 2)], log
    # Nothing else: the epochs, then each run's result line.
    assert len(log.splitlines()) == 6 and len(re.findall(r"^\S+: top1 ", log, re.M)) == 2, log


def test_verbose_shows_tensorflows_own_lines(config):
    # The runs are finished (the test above): TensorFlow loads, nothing trains.
    res = subprocess.run(command(config, "--verbose"), env=user_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=600)
    assert res.returncode == 0, res.stdout
    assert STARTUP.search(res.stdout) and "finished before" in res.stdout, res.stdout


def test_on_a_terminal_the_bar_is_live_and_each_epoch_ends_in_its_line(config, tmp_path):
    fresh = write_config(tmp_path / "c.yaml", tmp_path / "runs", recipe={"epochs": 2})
    master, slave = pty.openpty()
    proc = subprocess.Popen(command(fresh), env=user_env(), stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer has closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0
    screen = b"".join(chunks).decode()
    assert not STARTUP.search(screen), screen
    # Redrawn in place: a carriage return before each state of the bar, no escape codes.
    bars = re.findall(r"\r(\S+ epoch \d/2 \[[#.]{30}\] \d+/\d+  loss [\d.]+  top1 [\d.]+)", screen)
    assert len(bars) >= 4 and "\x1b" not in screen, repr(screen[:500])
    # Each bar is erased (blanked) and replaced by its epoch's line; the last line is the result.
    pieces = [piece.strip() for piece in re.split(r"[\r\n]+", screen) if piece.strip()]
    assert len(EPOCH.findall("\n".join(pieces))) == 4, screen
    assert pieces[-1].startswith("BnB4-") and ": top1 " in pieces[-1], screen
