/** Must equal the Python package's version (checked by tests/server/test_packaging.py). */
export const VERSION = '0.1.0';
