module armorpsk

go 1.19
