"""empsync's sync core: Firestore → MySQL, with no knowledge of any screen."""

__version__ = "0.1.0"
