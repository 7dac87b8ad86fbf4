"""The loader: scan a directory, plan (pure decisions), apply the plan through the kernel layer."""
