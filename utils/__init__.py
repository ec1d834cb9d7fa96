"""deep-features: pretrained deep features for image recognition and retrieval (course toolkit)."""
