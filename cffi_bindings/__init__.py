"""Host builds of generated models through cffi (API mode): the same C that runs on the board."""
