"""Demo data: the Drosophila VNC ssTEM stack (Gerhard et al., CC BY-NC-SA 3.0)."""
