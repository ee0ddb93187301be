mod infer;
