"""WavLLM as a fairseq plugin: ``--user-dir wavllm_fairseq`` registers its task, model,
criterion and scorer; ``WavLLM.from_checkpoint`` answers questions with a trained model."""
from .library_noise import silence_library_noise

silence_library_noise()

from .checkpoint_safety import allow_fairseq_checkpoints  # noqa: E402
from .errors import install_excepthook_in_fairseq_commands  # noqa: E402
from .fairseq_checkpoints import install_checkpoint_io  # noqa: E402

allow_fairseq_checkpoints()
install_checkpoint_io()
install_excepthook_in_fairseq_commands()

# Importing these registers the task, the model, the criterion and the scorer with fairseq.
from .criterions import wavllm_cross_entropy  # noqa: E402,F401
from .models import wavllm  # noqa: E402,F401
from .scoring import accuracy  # noqa: E402,F401
from .tasks import wavllm as wavllm_task  # noqa: E402,F401
from .inference import WavLLM  # noqa: E402,F401
