from podkit.adapters.metrics import main

main()
