"""Built-in sources; each module imports its SDK only when loaded."""
