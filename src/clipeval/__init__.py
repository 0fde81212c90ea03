"""clipeval: measure how well captions match images with CLIP-family models."""

import warnings

__version__ = "0.1.0"

# In a Jupyter kernel without ipywidgets, the model libraries' `import tqdm.auto` warns "IProgress not found"
# into every executed notebook. clipeval draws text bars (clipeval.progress), and tqdm.auto falls back to
# them too: the warning is about widgets nobody here draws.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")
