"""What a reader sees: progress while a sweep runs, figures, summary.md, the HTML report, TensorBoard."""
