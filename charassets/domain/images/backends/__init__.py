"""Image signal backends: each turns a decoded picture into faces and named attributes."""
