"""Post-processing: block-wise 3D connected components of the predicted classes."""
