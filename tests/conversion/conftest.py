from images.fixtures import minimal_image  # noqa: F401  (session fixture shared with the image tests)
