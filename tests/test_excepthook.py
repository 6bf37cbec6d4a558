"""The one-line error printing is installed by command-line programs only, never by an import."""
import subprocess
import sys


def test_importing_the_package_leaves_the_host_programs_excepthook_alone():
    code = "import sys; before = sys.excepthook; import wavllm_fairseq; print(sys.excepthook is before)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "True"
