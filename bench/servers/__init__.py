"""Entry points for functions-framework: the real functions, instrumented, and a bare baseline."""
