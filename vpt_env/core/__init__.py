"""The pure batched core: boxes, state, dynamics, rendering, augmentation."""
