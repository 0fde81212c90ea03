"""Normalisation constants shared by the model families (one definition each)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's own image statistics
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
