"""3D segmentation: patch-based training and sliding-window inference on SubjectSets."""
