"""crawl2chat training: GPT model, DeepSpeed pretraining, export. Imports torch/deepspeed/mlflow/dagster_pipes only."""
import os
import sys

# DeepSpeed compiles its CPU comm op into torch's extension cache, by default one per user
# (~/.cache/torch_extensions) and shared by every environment: a second checkout's venv (other
# include paths) rewrote the build there and recompiled it (~70 s, during a demo's training launch),
# and a build killed midway left a lock that every later launch waited on forever. So each
# environment gets its own cache, inside it (`make install` compiles the op there once).
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(sys.prefix, "torch_extensions"))
