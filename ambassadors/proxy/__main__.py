from podkit.ambassadors.proxy import main

main()
