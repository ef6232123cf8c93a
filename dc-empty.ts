Deno.exit(0)
