"""Network definitions written for vidrestore, each loadable from its official state dict."""
