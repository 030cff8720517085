"""What every part of longctx shares, free of torch: imported by finetune, plugin, serve and loadtest."""
