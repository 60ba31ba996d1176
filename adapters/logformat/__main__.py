from podkit.adapters.logformat import main

main()
