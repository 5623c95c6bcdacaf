// Anchor for the shared <torch/torch.h> precompiled header (see cmake/DsDependencies.cmake).
