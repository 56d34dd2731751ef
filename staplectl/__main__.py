from staplectl.app import main

main()
