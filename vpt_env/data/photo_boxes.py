"""Hand-annotated object boxes for the embedded photos.

Pixel coordinates of the full-resolution image.
"""

PHOTO_BOXES: dict[str, list[tuple[str, tuple[int, int, int, int]]]] = {
    "astronaut": [
        ("person", (18, 14, 365, 512)),
        ("face", (176, 80, 277, 166)),
        ("flag", (0, 0, 97, 512)),
        ("rocket", (353, 0, 473, 283)),
    ],
    "coffee": [
        ("cup", (172, 18, 408, 308)),
        ("saucer", (77, 67, 480, 390)),
        ("spoon", (320, 67, 423, 327)),
    ],
    "chelsea": [
        ("cat", (0, 0, 390, 300)),
    ],
    "rocket": [
        ("rocket", (309, 126, 336, 408)),
        ("tower", (167, 123, 205, 427)),
        ("tower", (437, 123, 474, 427)),
    ],
    "hubble_deep_field": [
        ("galaxy", (105, 381, 141, 420)),
        ("galaxy", (709, 452, 750, 494)),
        ("star", (739, 562, 770, 593)),
    ],
    "retina": [
        ("optic disc", (118, 565, 310, 762)),
    ],
    "immunohistochemistry": [
        ("cell cluster", (252, 302, 382, 512)),
        ("cell cluster", (270, 0, 462, 300)),
    ],
    "motorcycle": [
        ("motorcycle", (90, 14, 684, 452)),
        ("bench", (42, 104, 282, 308)),
    ],
    "china": [
        ("building", (62, 28, 372, 420)),
        ("tree", (545, 134, 640, 427)),
    ],
    "flower": [
        ("flower", (169, 84, 446, 356)),
        ("flower", (288, 373, 442, 427)),
    ],
}

PHOTO_SIZES: dict[str, tuple[int, int]] = {
    "astronaut": (512, 512),
    "coffee": (400, 600),
    "chelsea": (300, 451),
    "rocket": (427, 640),
    "hubble_deep_field": (872, 1000),
    "retina": (1411, 1411),
    "immunohistochemistry": (512, 512),
    "motorcycle": (500, 741),
    "china": (427, 640),
    "flower": (427, 640),
}
