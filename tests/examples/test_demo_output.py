"""The demo's terminal output: training progress and errors, not config dumps or library warnings."""
from demo import shown_in_terminal  # examples/wavllm, on the path through pytest.ini

LOG = """DEBUG:hydra.core.utils:Setting JobRuntime:name=hydra_train
/venv/lib/python3.11/site-packages/fairseq_cli/hydra_train.py:25: UserWarning: 
The version_base parameter is not specified.
  @hydra.main(config_path=os.path.join("..", "fairseq", "config"), config_name="config")
<frozen runpy>:88: UserWarning: 
'demo_stage1' is validated against ConfigStore schema with the same name.
[2026-12-01 23:47:06,505][fairseq_cli.train][INFO] - {'_name': None, 'common': {'seed': 1}}
[2026-12-01 23:47:06,505][fairseq_cli.train][INFO] - WavLLMModel(
  (encoder): WavLLMEncoder(
)
[2026-12-01 23:47:06,512][fairseq.trainer][INFO] - begin training epoch 3
/venv/lib/python3.11/site-packages/fairseq/tasks/fairseq_task.py:531: FutureWarning: `torch.cuda.amp.autocast(args...)` is deprecated.
  with torch.cuda.amp.autocast(enabled=(isinstance(optimizer, AMPOptimizer))):
2026-11-25 10:00:00 | INFO | fairseq.utils | loading
[2026-12-01 23:47:44,439][train][INFO] - epoch 003 | loss 7.353 | num_updates 6
[2026-12-01 23:47:44,439][fairseq.trainer][WARNING] - a warning of fairseq's own
[2026-12-01 23:47:44,440][fairseq_cli.train][INFO] - done training in 66.2 seconds
Traceback (most recent call last):
  File "train.py", line 1, in <module>
ValueError: bad manifest
"""


def test_only_progress_and_errors_reach_the_terminal():
    shown, flag = [], True
    for line in LOG.splitlines():
        flag = shown_in_terminal(line, flag)
        if flag:
            shown.append(line.strip())
    assert shown == [
        "[2026-12-01 23:47:44,439][train][INFO] - epoch 003 | loss 7.353 | num_updates 6",
        "[2026-12-01 23:47:44,439][fairseq.trainer][WARNING] - a warning of fairseq's own",
        "[2026-12-01 23:47:44,440][fairseq_cli.train][INFO] - done training in 66.2 seconds",
        "Traceback (most recent call last):", 'File "train.py", line 1, in <module>', "ValueError: bad manifest",
    ]


def test_the_stage_log_shows_each_line_while_the_stage_still_runs(tmp_path, monkeypatch, capsys):
    import demo

    log = tmp_path / "train.log"
    on_disk_meanwhile = []

    class Stage:  # stands in for fairseq-hydra-train: two lines of progress, reading the log between them
        def __init__(self, *args, **kwargs):
            self.stdout = self.lines()

        def lines(self):
            yield "[2026-12-02 05:33:51,438][train_inner][INFO] - epoch 001: num_updates=10\n"
            on_disk_meanwhile.append(log.read_text(encoding="utf-8"))
            yield "[2026-12-02 05:34:27,273][train_inner][INFO] - epoch 001: num_updates=20\n"

        def wait(self):
            self.returncode = 0
            return 0

    monkeypatch.setattr(demo.subprocess, "Popen", Stage)
    demo.hydra_train("real_llm_stage1", [], str(log))
    assert on_disk_meanwhile[0].endswith("num_updates=10\n")
    assert log.read_text(encoding="utf-8").endswith("num_updates=20\n")
