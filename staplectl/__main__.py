from staplectl.entry import main

main()
