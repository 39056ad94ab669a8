"""The scripts, styles and icons the web pages load, shipped in the wheel as package data (``qscope.static``).
Nothing here comes from a CDN: third-party files are vendored, pinned, under vendor/."""
