"""Label files: turning a crowd-labeling dataset into landing files, and landing files into rows."""
