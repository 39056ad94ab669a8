"""The Jinja2 templates of qscope's web pages, shipped in the wheel as package data (``qscope.templates``)."""
